//! Kairo's outside-world side: the WhatsApp Cloud API channel, the sandbox
//! channel and the `http` step's client.
//!
//! The engine owns the traits (`Channel`, `Outbound`, `HttpCaller`); this
//! crate implements them and the `kairo` binary wires them in. Built so far:
//! the WhatsApp webhook (verification and payloads), the sandbox channel
//! (records sends, sends nothing) and the HTTP client. The WhatsApp sending
//! client arrives with issue #6.

pub mod http;
pub mod sandbox;
pub mod whatsapp;
