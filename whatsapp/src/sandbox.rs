//! The sandbox channel: what `kairo serve` and `kairo worker` send through
//! while no WhatsApp sending is configured. Nothing leaves the machine: each
//! send gets a made-up wamid (so it shows in the inbox like a real one) and,
//! when a record file is set, one JSON line appended to it.
//!
//! The record file is also how the crash tests count sends: each line is one
//! `write` to a file opened in append mode, so a process killed at any
//! instant leaves whole lines behind.

use std::path::PathBuf;

use async_trait::async_trait;
use kairo_core::outbound::{CallError, Outbound, OutboundTemplate, OutboundText, SendReceipt};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Default)]
pub struct SandboxChannel {
    record_file: Option<PathBuf>,
}

impl SandboxChannel {
    pub fn new(record_file: Option<PathBuf>) -> Self {
        Self { record_file }
    }

    async fn record(&self, kind: &str, message: serde_json::Value) -> Result<SendReceipt, CallError> {
        let wamid = format!("wamid.sandbox.{}", uuid::Uuid::now_v7().simple());
        if let Some(path) = &self.record_file {
            let line = serde_json::json!({ "kind": kind, "wamid": wamid, "message": message });
            let mut bytes = serde_json::to_vec(&line).expect("a send serialises");
            bytes.push(b'\n');
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
                .map_err(|e| CallError::temporary(format!("sandbox record file {}: {e}", path.display())))?;
            file.write_all(&bytes)
                .await
                .map_err(|e| CallError::temporary(format!("sandbox record file {}: {e}", path.display())))?;
        }
        tracing::info!(kind, %wamid, "sandbox: message recorded, not sent");
        Ok(SendReceipt { wamid, message_status: Some("accepted".into()) })
    }
}

#[async_trait]
impl Outbound for SandboxChannel {
    async fn send_template(&self, message: &OutboundTemplate) -> Result<SendReceipt, CallError> {
        self.record("template", serde_json::to_value(message).expect("a send serialises")).await
    }

    async fn send_text(&self, message: &OutboundText) -> Result<SendReceipt, CallError> {
        self.record("text", serde_json::to_value(message).expect("a send serialises")).await
    }

    /// Nothing leaves the machine, so there is no limit to keep.
    fn paced(&self) -> bool {
        false
    }
}
