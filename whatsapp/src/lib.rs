//! The WhatsApp Cloud API channel: webhook verification and payloads, the
//! Graph API client, sending, error classification (the only place that
//! knows Meta's error codes), the account sync, and the sandbox channel that
//! stands in for the Cloud API when no account is configured.
//!
//! The engine calls the traits of `kairo_core::outbound` and reads the events
//! of `kairo_core::channel`; this crate implements the one and produces the
//! other, and the `kairo` binary wires it in. It writes only through the
//! store's operations (the sync's accounts, numbers and templates).

mod content;
pub mod errors;
pub mod graph;
pub mod sandbox;
pub mod send;
pub mod sync;
pub mod webhook;

pub use graph::{GraphClient, GraphSettings};
pub use send::CloudApiChannel;
pub use webhook::WhatsAppWebhook;
