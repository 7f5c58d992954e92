//! Kairo's built-in workflow actions and the WhatsApp Cloud API channel.
//!
//! The engine owns the `Action` and `Channel` traits; this crate implements
//! them and the `kairo` binary wires them in. Nothing here is built yet: the
//! send, assign, wait and branch actions arrive with the runtime (issue #4)
//! and the WhatsApp channel (issues #5 and #6).
