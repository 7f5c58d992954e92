//! A workflow version ready to run: the parsed model plus the lookups the
//! runtime needs (the compiled steps, a step by id, the step after another).

use std::path::Path;

use chrono::{DateTime, Utc};

use kairo_core::ids::{WorkflowId, WorkflowVersionId};
use kairo_store::{PhoneNumber, WorkflowVersion};
use kairo_workflow::compiled::{Compiled, CompiledStep};
use kairo_workflow::model::Workflow;

/// One stored workflow version, parsed and compiled once and shared by
/// every step of every enrollment on it.
#[derive(Debug)]
pub struct Plan {
    pub workflow_id: WorkflowId,
    pub version_id: WorkflowVersionId,
    pub version: i32,
    /// When the workflow was first registered: schedules never fire for
    /// ticks before it.
    pub registered_at: DateTime<Utc>,
    /// The file as written (its triggers, names and texts).
    pub model: Workflow,
    /// Its steps and rules, ready to run.
    pub compiled: Compiled,
}

/// Why a stored version cannot run: its row is missing or damaged (a
/// version passed validation when it was registered).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the version row is missing")]
    Missing,
    #[error("its source does not parse: {0}")]
    Parse(kairo_workflow::Diagnostic),
    #[error("it does not compile: {0}")]
    Compile(kairo_workflow::compiled::CompileError),
}

impl Plan {
    /// Parses and compiles a stored version. A stored version passed
    /// validation when it was registered, so an error here means the
    /// stored row is damaged.
    pub fn from_version(version: &WorkflowVersion, registered_at: DateTime<Utc>) -> Result<Plan, PlanError> {
        let name = format!("workflow version {} (v{})", version.id, version.version);
        let model = kairo_workflow::parse(Path::new(&name), &version.source).map_err(PlanError::Parse)?;
        let compiled = Compiled::new(&model).map_err(PlanError::Compile)?;
        Ok(Plan {
            workflow_id: version.workflow_id,
            version_id: version.id,
            version: version.version,
            registered_at,
            model,
            compiled,
        })
    }

    pub fn key(&self) -> &str {
        &self.model.id.value
    }

    pub fn step(&self, id: &str) -> Option<&CompiledStep> {
        self.compiled.step(id)
    }

    /// The first step an enrollment runs.
    pub fn first_step(&self) -> &str {
        self.compiled.first_step()
    }

    /// The step after `id`: its `next:`, else the following one in the list;
    /// `None` at the end of the workflow.
    pub fn after(&self, id: &str) -> Option<&str> {
        self.compiled.after(id)
    }
}

/// The business number a workflow names: by Graph id, or by the digits of
/// its display form.
pub fn resolve_number<'a>(numbers: &'a [PhoneNumber], written: &str) -> Option<&'a PhoneNumber> {
    numbers.iter().find(|n| n.answers_to(written))
}
