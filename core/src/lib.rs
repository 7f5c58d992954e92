//! Kairo's shared vocabulary, below every other crate: typed ids, the
//! clock (the only reader of the system time), secrets that never print,
//! phone digits, the status enums of every table, text normalisation, the
//! events a channel's webhook delivers, and the outbound traits the engine
//! calls.
//!
//! Nothing here touches the database or the network (the one file read is
//! `OffsetClock`'s offset, a demo's or a test's clock); the engine, the
//! store and the channels all speak these types, so none of them needs
//! another to name a thing.

pub mod channel;
pub mod clock;
pub mod content;
pub mod ids;
pub mod outbound;
pub mod phone;
pub mod secret;
pub mod status;
pub mod text;

pub use clock::{Clock, FakeClock, OffsetClock, SystemClock};
pub use secret::Secret;
