//! `kairo validate`: check workflow files, print every problem, exit 0/1/2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::Config;
use anyhow::{Context, Result};
use kairo_store::{Store, StoreError};
use kairo_workflow::{self as workflow, Catalog, Diagnostic};
use serde_json::json;

use crate::UsageError;

pub async fn run(config: &Config, paths: Vec<PathBuf>, catalog: Option<&Path>, as_json: bool) -> Result<ExitCode> {
    let paths = if paths.is_empty() { vec![config.workflows_dir.clone()] } else { paths };
    for path in &paths {
        if !path.exists() {
            return Err(UsageError(format!("{} does not exist", path.display())).into());
        }
    }
    let files = workflow::discover(&paths).with_context(|| "reading the workflow folders")?;
    let catalog = match catalog {
        Some(file) => Some(read_catalog(file)?),
        None => synced_catalog(config).await?,
    };
    if catalog.is_none() && !as_json {
        eprintln!(
            "note: no synced catalogue: numbers and templates are not checked (run `kairo sync` or pass --catalog FILE)"
        );
    }
    let reports = check_all(&files, catalog.as_ref())?;
    let problems: usize = reports.iter().map(|(_, _, o)| o.as_ref().err().map_or(0, Vec::len)).sum();
    let invalid = reports.iter().filter(|(_, _, o)| o.is_err()).count();
    if as_json {
        let files: Vec<_> = reports
            .iter()
            .map(|(file, _, outcome)| match outcome {
                Ok(valid) => json!({"path": file, "valid": true, "content_hash": valid.content_hash,
                    "diagnostics": [], "warnings": valid.warnings}),
                Err(diagnostics) => json!({"path": file, "valid": false, "diagnostics": diagnostics}),
            })
            .collect();
        let report = json!({"valid": invalid == 0, "catalog_checked": catalog.is_some(), "files": files});
        println!("{}", serde_json::to_string_pretty(&report).context("printing the report")?);
    } else {
        for (_, source, outcome) in &reports {
            for diagnostic in outcome.as_ref().err().into_iter().flatten() {
                println!("{}\n", render(diagnostic, source));
            }
            for warning in outcome.as_ref().ok().into_iter().flat_map(|v| &v.warnings) {
                println!("warning: {}\n", warning.render(source));
            }
        }
        if invalid == 0 {
            println!("{} workflow file(s) valid", files.len());
        } else {
            println!("{problems} problem(s) in {invalid} of {} workflow file(s)", files.len());
        }
    }
    Ok(if invalid == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

type Outcome = Result<workflow::ValidWorkflow, Vec<Diagnostic>>;

/// Checks the files on every core: each file is independent.
fn check_all<'a>(files: &'a [PathBuf], catalog: Option<&Catalog>) -> Result<Vec<(&'a PathBuf, String, Outcome)>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len().max(1));
    let chunk = files.len().div_ceil(threads).max(1);
    let results: Vec<Result<Vec<_>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|file| {
                            let source = std::fs::read_to_string(file)
                                .map_err(|err| UsageError(format!("cannot read {}: {err}", file.display())))?;
                            let outcome = workflow::check(file, &source, catalog);
                            Ok((file, source, outcome))
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a validation thread does not panic")).collect()
    });
    let mut all = Vec::with_capacity(files.len());
    for part in results {
        all.extend(part?);
    }
    Ok(all)
}

fn render(diagnostic: &Diagnostic, source: &str) -> String {
    format!("error: {}", diagnostic.render(source))
}

pub fn read_catalog(file: &Path) -> Result<Catalog> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| UsageError(format!("cannot read catalogue {}: {err}", file.display())))?;
    serde_json::from_str(&text)
        .map_err(|err| UsageError(format!("catalogue {} is not valid: {err}", file.display())).into())
}

/// The catalogue synced into the database, if there is one. A SQLite file
/// that does not exist yet is not created just to find it empty.
async fn synced_catalog(config: &Config) -> Result<Option<Catalog>> {
    let url = &config.database_url;
    if url.scheme() == "sqlite" {
        let path = url.to_string().trim_start_matches("sqlite://").trim_start_matches("sqlite:").to_string();
        let path = path.split('?').next().unwrap_or_default().to_string();
        if !Path::new(&path).exists() {
            return Ok(None);
        }
    }
    let store = Store::open(url).await?;
    if !store.readiness().await.is_ready() {
        return Ok(None);
    }
    let catalog = kairo_engine::registry::catalog(&store).await.map_err(|err: StoreError| anyhow::anyhow!(err))?;
    store.close().await;
    Ok(Some(catalog).filter(|c| !c.is_empty()))
}
