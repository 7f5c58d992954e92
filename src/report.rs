//! What an operator reads and does between deploys: `kairo numbers` (each
//! business number's health, pause, queue and when its last queued
//! message should go out), `kairo numbers resume`, and `kairo status`
//! (each workflow's enrollments and, per step, executions, deliveries and
//! failures by WhatsApp error code).

use kairo_store::WorkflowState;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use anyhow::Result;
use kairo_core::clock::{Clock, SystemClock};
use kairo_engine::runtime::{Engine, EngineConfig, RecordingHttp, SendEstimate, default_owner};
use kairo_store::Store;
use kairo_store::{PauseScope, PhoneNumber, StepCounts};
use kairo_whatsapp::sandbox::SandboxChannel;
use kairo_whatsapp::webhook::account_restrictions as restrictions_of;
use serde_json::json;

use crate::UsageError;

/// `kairo numbers`: one line per number, or JSON.
pub async fn numbers(config: &Config, json_out: bool) -> Result<ExitCode> {
    let store = crate::open_existing(config).await?;
    let engine = read_only_engine(&store);
    let estimates = engine.send_estimates().await?;
    let numbers = store.phone_numbers().await?;
    if json_out {
        let rows: Vec<_> = numbers
            .iter()
            .map(|n| {
                let e = estimate_of(&estimates, n);
                json!({
                    "number": n.display_number, "graph_id": n.graph_id, "verified_name": n.verified_name,
                    "quality_rating": n.quality_rating, "status": n.status, "throughput_mps": n.throughput_mps,
                    "messaging_limit_tier": n.messaging_limit_tier,
                    "paused": PauseScope::of(n).map(|scope| json!({
                        "scope": scope.as_str(), "reason": n.pause_reason, "since": n.paused_at,
                    })),
                    "estimate": e,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if numbers.is_empty() {
        println!("no business numbers yet: add them to kairo.toml and run `kairo sync`");
    } else {
        for number in &numbers {
            println!("{}", number_line(number, estimate_of(&estimates, number)));
        }
        for line in account_restrictions(&store).await? {
            println!("{line}");
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Meta's account restrictions as the latest `account_update` of each
/// account states them, those that stop sends and those that do not (adding
/// numbers, …), with when they expire.
async fn account_restrictions(store: &Store) -> Result<Vec<String>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut lines = Vec::new();
    for event in store.latest_events("notice:account_update", 200).await? {
        let account = event.payload["account_id"].as_str().unwrap_or_default().to_string();
        let field = event.payload["field"].as_str().unwrap_or("account_update");
        let Some(restrictions) = restrictions_of(field, &event.payload["payload"]) else { continue };
        if !seen.insert(account.clone()) {
            continue;
        }
        for restriction in restrictions {
            lines.push(format!(
                "account {account}: restricted by Meta: {}{}; {}",
                restriction.kind,
                match (restriction.until, &restriction.until_text) {
                    (Some(t), _) => format!(" until {}", t.format("%Y-%m-%d %H:%M UTC")),
                    (None, Some(text)) => format!(" until {text}"),
                    (None, None) => String::new(),
                },
                if restriction.stops_sends {
                    "business-initiated sends are paused"
                } else {
                    "sends go on (this restriction stops no message)"
                }
            ));
        }
    }
    Ok(lines)
}

fn estimate_of<'a>(estimates: &'a [SendEstimate], number: &PhoneNumber) -> Option<&'a SendEstimate> {
    estimates.iter().find(|e| e.number == number.display_number)
}

fn number_line(n: &PhoneNumber, e: Option<&SendEstimate>) -> String {
    let mut line = format!(
        "{} ({}): {} msg/s, quality {}, limit {}",
        n.display_number,
        n.verified_name.as_deref().unwrap_or("unnamed"),
        n.throughput_mps,
        n.quality_rating.as_deref().unwrap_or("unknown"),
        n.messaging_limit_tier.as_deref().unwrap_or("not set"),
    );
    if let Some(scope) = PauseScope::of(n) {
        let what = match scope {
            PauseScope::Marketing => "marketing sends",
            PauseScope::All => "all sends",
        };
        line.push_str(&format!(
            "\n  PAUSED ({what}) since {}: {}\n  resume with `kairo numbers resume {}` once fixed",
            n.paused_at.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default(),
            n.pause_reason.as_deref().unwrap_or("no reason recorded"),
            n.display_number
        ));
    }
    if let Some(e) = e.filter(|e| e.queued > 0 && e.bound_by == "paused") {
        line.push_str(&format!(
            "\n  {} sends queued; none goes out while the number is paused (resumed now, the last would go by {})",
            e.queued,
            e.last_send_at.format("%Y-%m-%d %H:%M:%S UTC"),
        ));
    } else if let Some(e) = e.filter(|e| e.queued > 0) {
        let bound =
            if e.bound_by == "messaging_limit" { "the messaging limit" } else { "throughput and when each is due" };
        line.push_str(&format!(
            "\n  {} sends queued at {}/s; the last should go out by {} (bound by {bound})",
            e.queued,
            e.rate_per_second,
            e.last_send_at.format("%Y-%m-%d %H:%M:%S UTC"),
        ));
    }
    line
}

/// `kairo numbers resume NUMBER`.
pub async fn resume(config: &Config, which: &str) -> Result<ExitCode> {
    let store = crate::open_existing(config).await?;
    let numbers = store.phone_numbers().await?;
    let Some(number) = numbers.iter().find(|n| n.answers_to(which)) else {
        let known: Vec<_> = numbers.iter().map(|n| n.display_number.as_str()).collect();
        return Err(UsageError(format!(
            "no business number `{which}`; known numbers: {}",
            if known.is_empty() { "none (run `kairo sync`)".to_string() } else { known.join(", ") }
        ))
        .into());
    };
    if store.resume_number(number.id, SystemClock.now()).await? {
        println!(
            "{}: resumed (was paused: {}); held sends go now",
            number.display_number,
            number.pause_reason.as_deref().unwrap_or("no reason recorded")
        );
    } else {
        println!("{}: was not paused", number.display_number);
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `kairo status [WORKFLOW]`: enrollments per status and per-step counts.
pub async fn status(config: &Config, only: Option<&str>, json_out: bool) -> Result<ExitCode> {
    let store = crate::open_existing(config).await?;
    let mut workflows = store.workflows().await?;
    if let Some(key) = only {
        workflows.retain(|w| w.key == key);
        if workflows.is_empty() {
            return Err(
                UsageError(format!("no workflow `{key}` is loaded; `kairo serve` loads the workflows folder")).into()
            );
        }
    }
    let mut out = Vec::new();
    for workflow in &workflows {
        let enrollments = store.enrollment_counts(Some(workflow.id)).await?;
        let steps = store.step_counts(workflow.id).await?;
        out.push((workflow, enrollments, steps));
    }
    // Statuses WhatsApp sent for messages Kairo never recorded (sent by
    // another tool on the same number, or before a crash settled them).
    let (unmatched, unmatched_total) = store.unmatched_statuses(10).await?;
    if json_out {
        let rows: Vec<_> = out
            .iter()
            .map(|(w, enrollments, steps)| {
                let enrollments: serde_json::Map<_, _> =
                    enrollments.iter().map(|(status, n)| (status_name(status), json!(n))).collect();
                json!({ "workflow": w.key, "name": w.name, "enrollments": enrollments, "steps": steps })
            })
            .collect();
        let unmatched: Vec<_> = unmatched
            .iter()
            .map(|s| {
                json!({ "wamid": s.wamid.0, "status": s.status, "occurred_at": s.occurred_at,
                "received_at": s.received_at, "callback_data": s.callback_data })
            })
            .collect();
        let report =
            json!({ "workflows": rows, "unmatched_statuses": { "total": unmatched_total, "newest": unmatched } });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if out.is_empty() {
        println!("no workflows loaded yet: `kairo serve` loads the workflows folder");
    } else {
        for (w, enrollments, steps) in &out {
            let counts: Vec<String> = enrollments.iter().map(|(s, n)| format!("{n} {}", status_name(s))).collect();
            println!(
                "{} ({}): {}",
                w.key,
                w.name,
                if counts.is_empty() { "no enrollments".to_string() } else { counts.join(", ") }
            );
            for step in steps {
                println!("  {}", step_line(step));
            }
        }
    }
    if !json_out && unmatched_total > 0 {
        println!(
            "\n{unmatched_total} status(es) for messages Kairo has not recorded (sent by another tool on the number, or not settled yet); newest:"
        );
        for s in &unmatched {
            println!(
                "  {}  {:9}  {}{}",
                s.received_at.format("%Y-%m-%d %H:%M:%S UTC"),
                format!("{:?}", s.status).to_lowercase(),
                s.wamid.0,
                s.callback_data.as_deref().map(|c| format!("  ({c})")).unwrap_or_default()
            );
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

fn step_line(step: &StepCounts) -> String {
    let join = |map: Vec<String>| map.join(", ");
    let mut line = format!("{}: {}", step.step_id, join(step.states.iter().map(|(s, n)| format!("{n} {s}")).collect()));
    if !step.deliveries.is_empty() {
        line.push_str(&format!(
            "; messages {}",
            join(step.deliveries.iter().map(|(s, n)| format!("{n} {s}")).collect())
        ));
    }
    if step.held > 0 {
        line.push_str(&format!(", {} held for quality assessment", step.held));
    }
    if !step.failures.is_empty() {
        line.push_str(&format!(
            "; failed by code {}",
            join(step.failures.iter().map(|(code, n)| format!("{code}: {n}")).collect())
        ));
    }
    line
}

fn status_name(status: &kairo_core::status::EnrollmentStatus) -> String {
    serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// An engine that reads plans and numbers; it never runs a step.
fn read_only_engine(store: &Store) -> Arc<Engine> {
    Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(SandboxChannel::new(None)),
        Arc::new(RecordingHttp::default()),
        EngineConfig { owner: default_owner(), lease: Duration::from_secs(30), batch: 1 },
    )
}

/// `kairo workflows`: each workflow's state, current version and file.
pub async fn workflows(config: &Config) -> Result<ExitCode> {
    let store = crate::open_existing(config).await?;
    let mut workflows = store.workflows().await?;
    workflows.sort_by(|a, b| a.key.cmp(&b.key));
    if workflows.is_empty() {
        println!("no workflows loaded yet: put workflow files in the workflow folder and run `kairo serve`");
    }
    for workflow in workflows {
        let state = WorkflowState::of(&workflow);
        let version = match workflow.current_version_id {
            Some(id) => store.workflow_version(id).await?.map_or("?".to_string(), |v| format!("v{}", v.version)),
            None => "-".to_string(),
        };
        println!(
            "{}\t{}\t{version}\t{}",
            workflow.key,
            state.as_str(),
            workflow.source_path.as_deref().unwrap_or("(not from a file)")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kairo workflows pause|resume WORKFLOW`.
pub async fn set_workflow_state(config: &Config, key: &str, to: WorkflowState) -> Result<ExitCode> {
    let store = crate::open_existing(config).await?;
    let Some(workflow) = store.workflow_by_key(key).await? else {
        let known: Vec<String> = store.workflows().await?.into_iter().map(|w| w.key).collect();
        return Err(UsageError(format!(
            "no workflow `{key}`; known workflows: {}",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ))
        .into());
    };
    if WorkflowState::of(&workflow) == WorkflowState::Archived {
        return Err(UsageError(format!(
            "workflow `{key}` is archived (its file was removed): put its file back in the workflow folder to use it again"
        ))
        .into());
    }
    store.set_workflow_state(key, to, SystemClock.now()).await?;
    match to {
        WorkflowState::Paused => {
            println!("{key}: paused; nothing new enrolls and its schedules stop; running enrollments go on")
        }
        _ => println!("{key}: active; it enrolls again"),
    }
    Ok(ExitCode::SUCCESS)
}
