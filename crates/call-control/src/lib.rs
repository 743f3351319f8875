//! The dialcore service: REST API, call lifecycle, store and webhooks (see DESIGN.md).
