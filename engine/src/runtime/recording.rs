//! Channels that record instead of calling out: what `kairo simulate` and
//! tests run against. Nothing here touches the network.

/// A channel that records what it is asked to send and answers with made-up
/// wamids; it can be told to fail the next sends.
#[derive(Debug, Clone, Default)]
pub struct RecordingOutbound {
    /// Keep to the numbers' throughput, as the WhatsApp channel does (off by
    /// default: most tests are about other things).
    pub paced: bool,
    sent: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    failures: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<super::CallError>>>,
    attempts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl RecordingOutbound {
    /// A recorder that keeps to the numbers' pace and messaging limits, as
    /// the WhatsApp channel does.
    pub fn paced() -> Self {
        Self { paced: true, ..Self::default() }
    }

    /// Every message sent so far, as JSON, in order.
    pub fn sent(&self) -> Vec<serde_json::Value> {
        self.sent.lock().expect("recorder lock is never poisoned").clone()
    }

    /// How many sends were asked for, failed ones included.
    pub fn attempts(&self) -> usize {
        self.attempts.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes the next send fail with `error` (queued: call it again for more).
    pub fn fail_next(&self, error: super::CallError) {
        self.failures.lock().expect("recorder lock is never poisoned").push_back(error);
    }

    fn record(&self, message: serde_json::Value) -> Result<super::SendReceipt, super::CallError> {
        self.attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(error) = self.failures.lock().expect("recorder lock is never poisoned").pop_front() {
            return Err(error);
        }
        let mut sent = self.sent.lock().expect("recorder lock is never poisoned");
        sent.push(message);
        Ok(super::SendReceipt { wamid: format!("wamid.test.{}", sent.len()), message_status: Some("accepted".into()) })
    }
}

#[async_trait::async_trait]
impl super::Outbound for RecordingOutbound {
    async fn send_template(&self, message: &super::OutboundTemplate) -> Result<super::SendReceipt, super::CallError> {
        self.record(serde_json::to_value(message).expect("messages serialise"))
    }

    async fn send_text(&self, message: &super::OutboundText) -> Result<super::SendReceipt, super::CallError> {
        self.record(serde_json::to_value(message).expect("messages serialise"))
    }

    fn paced(&self) -> bool {
        self.paced
    }
}

/// An HTTP client that records requests and answers 200 with `{"ok": true}`.
#[derive(Debug, Clone, Default)]
pub struct RecordingHttp {
    calls: std::sync::Arc<std::sync::Mutex<Vec<super::HttpCall>>>,
}

impl RecordingHttp {
    pub fn calls(&self) -> Vec<super::HttpCall> {
        self.calls.lock().expect("recorder lock is never poisoned").clone()
    }
}

#[async_trait::async_trait]
impl super::HttpCaller for RecordingHttp {
    async fn call(&self, request: &super::HttpCall) -> Result<super::HttpAnswer, super::CallError> {
        self.calls.lock().expect("recorder lock is never poisoned").push(request.clone());
        Ok(super::HttpAnswer { status: 200, body: serde_json::json!({ "ok": true }) })
    }
}
