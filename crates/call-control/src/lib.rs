//! The dialcore service: REST API, call lifecycle, store and webhooks (see DESIGN.md).
pub mod config;
pub mod ids;
pub mod model;
pub mod store;
pub mod service;
pub mod engine;
pub mod runtime;
pub mod webhooks;
pub mod metrics;
pub mod api;
