//! `kairo simulate`: reads the files, runs the engine's simulation and
//! prints it for a marketer (or as JSON).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use kairo_core::status::{DeliveryStatus, EnrollmentStatus, StepState};
use kairo_engine::runtime::simulate::{Injected, Injection, SimulatedStep, Simulation, SimulationReport, simulate};
use kairo_workflow as workflow;
use serde_json::Value;

use crate::UsageError;

pub struct Args<'a> {
    pub workflow: &'a Path,
    pub contact: &'a Path,
    pub event: Option<&'a Path>,
    pub at: Option<&'a str>,
    pub catalog: Option<&'a Path>,
    pub replies: &'a [String],
    pub buttons: &'a [String],
    pub statuses: &'a [String],
    pub json: bool,
}

/// `TEXT@AFTER` into the text and the offset (zero without `@`).
fn split_at(flag: &str, value: &str) -> Result<(String, std::time::Duration)> {
    match value.rsplit_once('@') {
        Some((text, after)) => {
            let after = kairo_workflow::duration::parse_duration(after.trim()).map_err(|e| {
                UsageError(format!("--{flag} `{value}`: after `@` comes a duration such as 30m, 2h or 1d ({e})"))
            })?;
            Ok((text.to_string(), after))
        }
        None => Ok((value.to_string(), std::time::Duration::ZERO)),
    }
}

fn injections(args: &Args<'_>) -> Result<Vec<Injection>> {
    let mut out = Vec::new();
    for value in args.replies {
        let (text, after) = split_at("reply", value)?;
        out.push(Injection { after, what: Injected::Reply(text) });
    }
    for value in args.buttons {
        let (title, after) = split_at("button", value)?;
        out.push(Injection { after, what: Injected::Button(title) });
    }
    for value in args.statuses {
        let (name, after) = split_at("status", value)?;
        let status = match name.trim().to_ascii_lowercase().as_str() {
            "sent" => DeliveryStatus::Sent,
            "delivered" => DeliveryStatus::Delivered,
            "read" => DeliveryStatus::Read,
            "failed" => DeliveryStatus::Failed,
            other => {
                return Err(UsageError(format!(
                    "--status `{other}`: use sent, delivered, read or failed (with @AFTER, e.g. read@10m)"
                ))
                .into());
            }
        };
        out.push(Injection { after, what: Injected::Status(status) });
    }
    Ok(out)
}

pub async fn run(args: Args<'_>) -> Result<ExitCode> {
    let source = std::fs::read_to_string(args.workflow)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", args.workflow.display())))?;
    let catalog = match args.catalog {
        Some(path) => Some(crate::validate::read_catalog(path)?),
        None => None,
    };
    let valid = match workflow::check(args.workflow, &source, catalog.as_ref()) {
        Ok(valid) => valid,
        Err(problems) => {
            for problem in &problems {
                eprintln!("{}", problem.render(&source));
            }
            eprintln!("{} problem(s): fix them, then simulate again", problems.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    let contact = read_json(args.contact, "contact")?;
    let event = args.event.map(|p| read_json(p, "event")).transpose()?;
    let at = match args.at {
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map_err(|e| UsageError(format!("--at `{text}`: {e}; write e.g. 2026-03-02T10:00:00Z")))?
            .to_utc(),
        None => kairo_core::clock::Clock::now(&kairo_core::clock::SystemClock),
    };
    let injections = injections(&args)?;
    let report =
        simulate(Simulation { workflow: valid, contact, event, at, injections }).await.context("simulating")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("printing the report")?);
    } else {
        print!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn read_json(path: &Path, what: &str) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read the {what} file {}: {e}", path.display())))?;
    Ok(serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("the {what} file {} is not valid JSON: {e}", path.display())))?)
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%a %Y-%m-%d %H:%M UTC").to_string()
}

/// The report as a marketer reads it: one line per step, waits and branches spelled out.
pub fn render(report: &SimulationReport) -> String {
    let mut out = format!("Simulating `{}` from {}\n\n", report.workflow, when(report.started_at));
    let width = report.steps.iter().map(|s| s.step.len()).max().unwrap_or(4);
    // Steps and injections, in time order (an injection before the steps
    // of the same instant: they ran because of it).
    let mut lines: Vec<(DateTime<Utc>, u8, usize, String)> = Vec::new();
    for (i, step) in report.steps.iter().enumerate() {
        let line = format!(
            "  {}  {:width$}  {:14}  {}\n",
            when(step.at),
            step.step,
            step.action,
            describe(step),
            width = width
        );
        lines.push((step.at, 1, i, line));
    }
    for (i, injected) in report.injected.iter().enumerate() {
        let line = format!("  {}  {:width$}  {:14}  {}\n", when(injected.at), "", "(injected)", injected.what);
        lines.push((injected.at, 0, i, line));
    }
    lines.sort_by_key(|(at, kind, i, _)| (*at, *kind, *i));
    for (_, _, _, line) in lines {
        out.push_str(&line);
    }
    let finished = report.finished_at.map(when).unwrap_or_default();
    let result = match report.status {
        EnrollmentStatus::Completed => format!("completed at {finished}"),
        EnrollmentStatus::GoalMet => format!("goal met at {finished}"),
        EnrollmentStatus::Exited => {
            format!("exited at {finished}: {}", report.reason.as_deref().unwrap_or("no reason given"))
        }
        EnrollmentStatus::Failed => {
            format!("failed at {finished}: {}", report.error.as_deref().unwrap_or("unknown error"))
        }
        EnrollmentStatus::Cancelled => format!("cancelled at {finished}"),
        EnrollmentStatus::Active | EnrollmentStatus::Waiting => "still running".into(),
    };
    out.push_str(&format!("\nResult: {result}\n"));
    out.push_str(&format!("Messages: {} (recorded, nothing sent)\n", report.sent.len()));
    out
}

fn describe(step: &SimulatedStep) -> String {
    let output = step.output.clone().unwrap_or(Value::Null);
    let s = |key: &str| output.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    match step.state {
        StepState::Failed => return format!("FAILED: {}", step.error.as_deref().unwrap_or("")),
        StepState::Skipped => return format!("skipped: {}", s("reason").replace('_', " ")),
        StepState::Cancelled => return format!("not run: {}", s("reason")),
        StepState::Uncertain => return "outcome unknown".into(),
        StepState::Pending | StepState::Claimed | StepState::Attempting | StepState::Waiting => {
            return format!("{:?}", step.state).to_lowercase();
        }
        StepState::Succeeded => {}
    }
    match step.action.as_str() {
        "send_template" if s("type") == "text" => format!("sent free-form text (window open): \"{}\"", s("text")),
        "send_template" => {
            let params = &output["params"];
            let mut parts = vec![format!("sent template {} ({})", s("template"), s("language"))];
            if !params["header"].is_null() {
                parts.push(format!("header {}", params["header"]));
            }
            if !params["body"].is_null() {
                parts.push(format!("body {}", params["body"]));
            }
            if params["buttons"].as_array().is_some_and(|b| !b.is_empty()) {
                parts.push(format!("buttons {}", params["buttons"]));
            }
            parts.join(", ")
        }
        "wait" | "wait_for_reply" => {
            let until = output.get("until").and_then(Value::as_str).and_then(|t| DateTime::parse_from_rfc3339(t).ok());
            let until = until.map(|t| when(t.to_utc())).unwrap_or_default();
            match s("resumed_by").as_str() {
                "event" => format!("resumed by an event before {until}: {}", output["event"]["kind"]),
                _ if step.action == "wait_for_reply" => format!("no reply by {until} (skipped ahead)"),
                _ => format!("waited until {until} (skipped ahead)"),
            }
        }
        "branch" => match output.get("arm").and_then(Value::as_u64) {
            Some(arm) => format!("took arm {} -> {}", arm + 1, s("next")),
            None => format!("no arm matched -> {}", s("next")),
        },
        "split" => format!("bucket {} -> {}", output["bucket"], s("next")),
        "set_property" => output
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
        "http" => format!("answered {}", output["status"]),
        "exit" => format!("exit: {}", s("reason")),
        _ => "done".into(),
    }
}
