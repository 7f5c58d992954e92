//! `kairo simulate`: reads the files, runs the engine's simulation and
//! prints it for a marketer (or as JSON).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use kairo_engine::runtime::simulate::{SimulatedStep, Simulation, SimulationReport, simulate};
use kairo_engine::store::status::{EnrollmentStatus, StepState};
use kairo_engine::workflow;
use serde_json::Value;

use crate::UsageError;

pub struct Args<'a> {
    pub workflow: &'a Path,
    pub contact: &'a Path,
    pub event: Option<&'a Path>,
    pub at: Option<&'a str>,
    pub catalog: Option<&'a Path>,
    pub json: bool,
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
        None => kairo_engine::Clock::now(&kairo_engine::SystemClock),
    };
    let report = simulate(Simulation { workflow: valid, contact, event, at }).await.context("simulating")?;
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
    for step in &report.steps {
        out.push_str(&format!(
            "  {}  {:width$}  {:14}  {}\n",
            when(step.at),
            step.step,
            step.action,
            describe(step),
            width = width
        ));
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
