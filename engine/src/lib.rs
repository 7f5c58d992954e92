//! Kairo's engine: the durable runtime (workers, claims and commits,
//! triggers, the send pipeline, one module per action), the inbox rules and
//! the webhook journal's tasks (`inbox`), and the registry that turns
//! workflow files into stored versions.
//!
//! The engine knows the WhatsApp channel only through `kairo-core`'s traits
//! (`Outbound`, `HttpCaller`); it never parses WhatsApp's wire
//! format. Its state lives in `kairo-store` (the only crate that speaks SQL)
//! and its time comes from `kairo_core::clock`.

pub mod group_commit;
pub mod inbox;
pub mod people;
pub mod registry;
pub mod runtime;

#[cfg(feature = "test-support")]
pub mod testing;
