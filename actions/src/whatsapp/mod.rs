//! The WhatsApp Cloud API channel: webhook verification and payloads, the
//! Graph API client, sending, and error classification.

pub mod errors;
pub mod graph;
pub mod send;
pub mod sync;
pub mod webhook;

pub use graph::{GraphClient, GraphSettings};
pub use send::CloudApiChannel;
pub use webhook::WhatsAppWebhook;
