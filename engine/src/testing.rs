//! Test support for the engine's tests: recording channels, enrolling through
//! the API trigger, and a broadcast prepared for the sending tests. The database per test and
//! [`kairo_store::store_test`] live in [`kairo_store::testing`].

use kairo_store::Store;
use kairo_store::testing::connect_number;

pub use crate::runtime::recording::{RecordingHttp, RecordingOutbound};

/// Enrolls every contact into `workflow` through the API trigger (with a
/// recording channel: enrolling sends nothing); each must enroll.
pub async fn enroll_everyone(
    store: &Store,
    workflow: &str,
    contacts: &[kairo_core::ids::ContactId],
) -> Vec<kairo_core::ids::EnrollmentId> {
    use std::sync::Arc;

    use crate::runtime::{Engine, EngineConfig, Enrolled};
    let enroller = Engine::new(
        store.clone(),
        Arc::new(kairo_core::clock::SystemClock),
        Arc::new(RecordingOutbound::default()),
        Arc::new(RecordingHttp::default()),
        EngineConfig { owner: "test-enroller".into(), ..EngineConfig::default() },
    );
    enroller.refresh().await.expect("refresh");
    let results = enroller.enroll_many(workflow, contacts, serde_json::json!({})).await.expect("enroll");
    results
        .into_iter()
        .map(|r| match r {
            Enrolled::Enrolled { enrollment } => enrollment,
            other => panic!("every contact enrolls: {other:?}"),
        })
        .collect()
}

/// The most arrivals in any one-second window (sorts `times`).
pub fn busiest_second(times: &mut [std::time::Instant]) -> usize {
    times.sort();
    let mut most = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= std::time::Duration::from_secs(1) {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

/// The broadcast that sending tests and the broadcast benchmark run: one
/// template to every contact from the number `+1 555-000-1111`.
pub const BROADCAST_WORKFLOW: &str = r#"id: broadcast
name: Broadcast
triggers:
  - api: {}
steps:
  - id: announce
    send_template:
      number: "+1 555-000-1111"
      template: spring_sale
      language: en_US
      body: ["{{contact.first_name}}"]
"#;

/// Sets up a broadcast in `dir` for `kairo worker` processes: the workflow
/// file (loaded into `store`), a `kairo.toml` that sends through the Graph
/// API at `graph_url` with a token for the number `graph_id`
/// (`+1 555-000-1111`, at `throughput` msg/s), and `contacts` contacts
/// opted in on it and enrolled, in chunks (`progress` gets the count so
/// far). Returns the number.
pub async fn prepare_broadcast(
    store: &Store,
    dir: &std::path::Path,
    graph_url: &str,
    graph_id: &str,
    throughput: i32,
    contacts: usize,
    progress: impl Fn(usize),
) -> kairo_store::PhoneNumber {
    use kairo_core::clock::Clock;
    use kairo_store::NewContact;
    std::fs::create_dir_all(dir.join("workflows")).expect("workflows dir");
    std::fs::write(dir.join("workflows/broadcast.yaml"), BROADCAST_WORKFLOW).expect("workflow");
    std::fs::write(
        dir.join("kairo.toml"),
        format!(
            "[whatsapp]\ngraph_url = \"{graph_url}\"\n\n[[whatsapp.accounts]]\nwaba_id = \"1001\"\naccess_token = \"test-access-token\"\nnumbers = [{{ id = \"{graph_id}\", display_number = \"+1 555-000-1111\" }}]\n"
        ),
    )
    .expect("config");
    let now = kairo_core::clock::SystemClock.now();
    let number = connect_number(store, graph_id, "+1 555-000-1111", throughput, now).await;
    let report = crate::registry::load_workflows(store, &dir.join("workflows"), None, now).await.expect("load");
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let chunk = 20_000;
    for start in (0..contacts).step_by(chunk) {
        let people = (start..(start + chunk).min(contacts))
            .map(|i| NewContact {
                phone: Some(format!("+1 555 {i:07}")),
                properties: serde_json::json!({ "first_name": format!("C{i}") }),
                ..NewContact::default()
            })
            .collect();
        let ids = store.import_contacts(people, Some(number.id), now).await.expect("contacts");
        enroll_everyone(store, "broadcast", &ids).await;
        progress((start + chunk).min(contacts));
    }
    number
}
