//! The workflow registry: workflow files, validated against the template
//! catalogue, become stored versions; a folder is loaded as a whole (files
//! removed from it archive their workflow). It joins the language
//! ([`kairo_workflow`]) and the store, which know nothing of each other.

use std::path::{Path, PathBuf};

use kairo_store::{CatalogRows, SavedVersion, Store, StoreError, WorkflowState};
use kairo_workflow::catalog::{CatalogAccount, CatalogNumber, CatalogPeople, CatalogTemplate};
use kairo_workflow::{Catalog, Diagnostic, Pos, ValidWorkflow, check, discover};

/// Stores a valid workflow as the newest version of its id, unless this
/// content is already stored.
pub async fn register_workflow(
    store: &Store,
    valid: &ValidWorkflow,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<SavedVersion, StoreError> {
    let definition = serde_json::to_value(&valid.workflow).expect("a parsed workflow serialises to JSON");
    store
        .save_workflow_version(
            &valid.workflow.id.value,
            &valid.workflow.name,
            &valid.content_hash,
            definition,
            &valid.source,
            now,
        )
        .await
}

/// What [`load_workflows`] did with a folder of workflow files.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Files whose content became a new version.
    pub new_versions: Vec<SavedVersion>,
    /// Files whose content was already the stored version.
    pub unchanged: Vec<PathBuf>,
    /// Files that failed validation: not stored; any previous version stays current.
    pub rejected: Vec<(PathBuf, Vec<Diagnostic>)>,
    /// Workflows archived because their file was removed from the folder.
    pub archived: Vec<String>,
}

/// Validates every workflow file in `dir` and stores each valid one as a
/// version. An invalid file is reported and skipped: the workflow's
/// previous version stays current.
pub async fn load_workflows(
    store: &Store,
    dir: &Path,
    catalog: Option<&Catalog>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<LoadReport, StoreError> {
    let mut report = LoadReport::default();
    let files = match discover(&[dir.to_path_buf()]) {
        Ok(files) => files,
        Err(err) => {
            let problem = Diagnostic::new(dir, Pos { line: 1, column: 1 }, format!("cannot read the folder: {err}"));
            report.rejected.push((dir.to_path_buf(), vec![problem]));
            return Ok(report);
        }
    };
    let mut seen_ids: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
    for file in files {
        let source = match std::fs::read_to_string(&file) {
            Ok(source) => source,
            Err(err) => {
                let problem =
                    Diagnostic::new(&file, Pos { line: 1, column: 1 }, format!("cannot read the file: {err}"));
                report.rejected.push((file, vec![problem]));
                continue;
            }
        };
        let valid = match check(&file, &source, catalog) {
            Ok(valid) => valid,
            Err(problems) => {
                report.rejected.push((file, problems));
                continue;
            }
        };
        if let Some(other) = seen_ids.insert(valid.workflow.id.value.clone(), file.clone()) {
            let problem = Diagnostic::new(
                &file,
                valid.workflow.id.pos,
                format!("workflow id `{}` is already used by {}", *valid.workflow.id, other.display()),
            );
            report.rejected.push((file, vec![problem]));
            continue;
        }
        let saved = register_workflow(store, &valid, now).await?;
        store.note_workflow_file(&valid.workflow.id.value, &file.to_string_lossy(), now).await?;
        if saved.created {
            report.new_versions.push(saved);
        } else {
            report.unchanged.push(file);
        }
    }
    // A workflow whose file is gone from the folder is archived: nothing
    // new enrolls and its schedules stop; running enrollments finish.
    // (A file that is there but invalid keeps its previous version.)
    for workflow in store.workflows().await? {
        let Some(source) = workflow.source_path.as_deref().map(Path::new) else { continue };
        if source.parent() != Some(dir) || source.exists() {
            continue;
        }
        if WorkflowState::of(&workflow) != WorkflowState::Archived {
            store.set_workflow_state(&workflow.key, WorkflowState::Archived, now).await?;
            report.archived.push(workflow.key.clone());
        }
    }
    Ok(report)
}

/// Every account with its numbers and templates, and the active users and
/// teams, for validating the steps that name them.
pub async fn catalog(store: &Store) -> Result<Catalog, StoreError> {
    let CatalogRows { accounts, numbers, templates, users, teams } = store.catalog_rows().await?;
    let accounts = accounts
        .into_iter()
        .map(|(account, waba_id)| CatalogAccount {
            waba_id,
            numbers: numbers
                .iter()
                .filter(|n| n.account_id == account)
                .map(|n| CatalogNumber { id: n.graph_id.clone(), display_phone_number: n.display_number.clone() })
                .collect(),
            templates: templates
                .iter()
                .filter(|t| t.account_id == account)
                .map(|t| CatalogTemplate {
                    name: t.name.clone(),
                    language: t.language.clone(),
                    status: t.status.clone(),
                    category: t.category.clone(),
                    parameter_format: t.parameter_format.clone(),
                    components: t.components.as_array().cloned().unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    Ok(Catalog { accounts, people: Some(CatalogPeople { users, teams }) })
}
