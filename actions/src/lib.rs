//! Kairo's built-in workflow actions and the WhatsApp Cloud API channel.
//!
//! The engine owns the `Action` and `Channel` traits; this crate implements
//! them and the `kairo` binary wires them in. Built so far: the WhatsApp
//! webhook (verification and payloads). The send, assign, wait and branch
//! actions arrive with the runtime (issue #4), the sending client with #6.

pub mod whatsapp;
