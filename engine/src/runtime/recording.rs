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
    failures: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<kairo_core::outbound::CallError>>>,
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
    pub fn fail_next(&self, error: kairo_core::outbound::CallError) {
        self.failures.lock().expect("recorder lock is never poisoned").push_back(error);
    }

    fn record(
        &self,
        message: serde_json::Value,
    ) -> Result<kairo_core::outbound::SendReceipt, kairo_core::outbound::CallError> {
        self.attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(error) = self.failures.lock().expect("recorder lock is never poisoned").pop_front() {
            return Err(error);
        }
        let mut sent = self.sent.lock().expect("recorder lock is never poisoned");
        sent.push(message);
        Ok(kairo_core::outbound::SendReceipt {
            wamid: format!("wamid.test.{}", sent.len()),
            message_status: Some("accepted".into()),
        })
    }
}

#[async_trait::async_trait]
impl kairo_core::outbound::Outbound for RecordingOutbound {
    async fn send_template(
        &self,
        message: &kairo_core::outbound::OutboundTemplate,
    ) -> Result<kairo_core::outbound::SendReceipt, kairo_core::outbound::CallError> {
        self.record(serde_json::to_value(message).expect("messages serialise"))
    }

    async fn send_text(
        &self,
        message: &kairo_core::outbound::OutboundText,
    ) -> Result<kairo_core::outbound::SendReceipt, kairo_core::outbound::CallError> {
        self.record(serde_json::to_value(message).expect("messages serialise"))
    }

    fn paced(&self) -> bool {
        self.paced
    }
}

/// An HTTP client that records requests and answers 200 with `{"ok": true}`.
#[derive(Debug, Clone, Default)]
pub struct RecordingHttp {
    calls: std::sync::Arc<std::sync::Mutex<Vec<kairo_core::outbound::HttpCall>>>,
}

impl RecordingHttp {
    pub fn calls(&self) -> Vec<kairo_core::outbound::HttpCall> {
        self.calls.lock().expect("recorder lock is never poisoned").clone()
    }
}

#[async_trait::async_trait]
impl kairo_core::outbound::HttpCaller for RecordingHttp {
    async fn call(
        &self,
        request: &kairo_core::outbound::HttpCall,
    ) -> Result<kairo_core::outbound::HttpAnswer, kairo_core::outbound::CallError> {
        self.calls.lock().expect("recorder lock is never poisoned").push(request.clone());
        Ok(kairo_core::outbound::HttpAnswer { status: 200, body: serde_json::json!({ "ok": true }) })
    }
}
