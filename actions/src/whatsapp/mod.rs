//! The WhatsApp Cloud API channel: webhook verification and payloads now;
//! the sending client joins with issue #6.

pub mod webhook;

pub use webhook::WhatsAppWebhook;
