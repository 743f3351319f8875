//! The dialcore service: REST API, call lifecycle, store and webhooks (see DESIGN.md).
pub mod api;
pub mod audio_files;
pub mod config;
pub mod destinations;
pub mod engine;
pub mod http_server;
pub mod ids;
pub mod lease;
pub mod metrics;
pub mod model;
pub mod redact;
pub mod runtime;
pub mod secrets;
pub mod service;
pub mod store;
pub mod test_calls;
pub mod webhooks;
