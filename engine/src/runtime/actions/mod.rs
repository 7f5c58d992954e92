//! One module per action a step can name: what running it decides. Each
//! gets its compiled form from [`kairo_workflow::compiled::Action`], its
//! conditions, durations and times already parsed; sends go through the
//! one send pipeline ([`super::send`]), and the outcome goes to the commit.

pub(super) mod assign_owner;
pub(super) mod branch;
pub(super) mod ensure_thread;
pub(super) mod exit;
pub(super) mod http;
pub(super) mod send_template;
pub(super) mod set_property;
pub(super) mod split;
pub(super) mod wait;
pub(super) mod wait_for_reply;
