//! Kairo's engine: the workflow model, the runtime, the store, the inbox,
//! contacts and consent, triggers and the HTTP API.
//!
//! The engine knows the WhatsApp channel only through traits: `Channel`
//! (webhooks, in `kairo-core`) and the outbound ones of [`runtime`]; it never
//! parses WhatsApp's wire format. Only [`store`] speaks SQL and only
//! [`clock`] reads the system time.

pub mod group_commit;
pub mod registry;
pub mod runtime;

#[cfg(feature = "test-support")]
pub mod testing;

pub use clock::{Clock, FakeClock, OffsetClock, SystemClock};

/// The shared vocabulary ([`kairo_core`]), under the paths the engine has
/// always used.
pub use kairo_core::{channel, clock, ids, phone, secret, status, text};
pub use kairo_store::{Store, StoreError};
pub use secret::Secret;
