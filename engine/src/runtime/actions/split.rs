//! `split`: send each enrollment down one arm by a stable bucket of its
//! id, so that the shares hold and a retried step takes the same arm.

use serde_json::json;

use crate::runtime::Engine;
use crate::runtime::context::RunContext;
use crate::runtime::outcome::{Outcome, Then, record};
use kairo_core::status::StepState;
use kairo_workflow::compiled::{CompiledStep, Share};

impl Engine {
    pub(in crate::runtime) fn split(&self, ctx: &RunContext, step: &CompiledStep, shares: &[Share]) -> Outcome {
        let bucket = split_bucket(&ctx.enrollment.id.to_string(), &step.id);
        let mut upto = 0;
        for share in shares {
            upto += share.percent;
            if bucket < upto {
                return Outcome::Done {
                    record: record(StepState::Succeeded, json!({ "bucket": bucket, "next": share.then }), None),
                    then: Then::Step(share.then.clone()),
                    effects: vec![],
                };
            }
        }
        self.succeeded(ctx, step, json!({ "bucket": bucket }), vec![])
    }
}

/// A stable bucket in 0..100 for a split: the same enrollment always takes
/// the same arm.
fn split_bucket(enrollment: &str, step: &str) -> u32 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{enrollment}:{step}").as_bytes());
    let first = u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"));
    (first % 100) as u32
}
