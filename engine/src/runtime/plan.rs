//! A workflow version ready to run: the parsed model plus the lookups the
//! runtime needs (a step by id, the step after another).

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::ids::{WorkflowId, WorkflowVersionId};
use crate::store::{PhoneNumber, WorkflowVersion};
use crate::workflow::model::{Step, Workflow};

/// One stored workflow version, parsed once and shared by every step of every
/// enrollment on it.
#[derive(Debug)]
pub struct Plan {
    pub workflow_id: WorkflowId,
    pub version_id: WorkflowVersionId,
    pub version: i32,
    /// When the workflow was first registered: schedules never fire for
    /// ticks before it.
    pub registered_at: DateTime<Utc>,
    pub model: Workflow,
    index: HashMap<String, usize>,
}

impl Plan {
    /// Parses a stored version. A stored version passed validation when it
    /// was registered, so a parse error here means the stored row is damaged.
    pub fn from_version(version: &WorkflowVersion, registered_at: DateTime<Utc>) -> Result<Plan, String> {
        let name = format!("workflow version {} (v{})", version.id, version.version);
        let model = crate::workflow::parse(Path::new(&name), &version.source).map_err(|d| d.to_string())?;
        let index = model.steps.iter().enumerate().map(|(i, s)| (s.id.value.clone(), i)).collect();
        Ok(Plan {
            workflow_id: version.workflow_id,
            version_id: version.id,
            version: version.version,
            registered_at,
            model,
            index,
        })
    }

    pub fn key(&self) -> &str {
        &self.model.id.value
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.index.get(id).map(|&i| &self.model.steps[i])
    }

    /// The first step an enrollment runs.
    pub fn first_step(&self) -> &str {
        &self.model.steps[0].id.value
    }

    /// The step after `id`: its `next:`, else the following one in the list;
    /// `None` at the end of the workflow.
    pub fn after(&self, id: &str) -> Option<&str> {
        let &i = self.index.get(id)?;
        let step = &self.model.steps[i];
        match &step.next {
            Some(next) => Some(next.value.as_str()),
            None => self.model.steps.get(i + 1).map(|s| s.id.value.as_str()),
        }
    }
}

/// The business number a workflow names: by Graph id, or by the digits of
/// its display form.
pub fn resolve_number<'a>(numbers: &'a [PhoneNumber], written: &str) -> Option<&'a PhoneNumber> {
    let digits: String = written.chars().filter(char::is_ascii_digit).collect();
    numbers.iter().find(|n| n.graph_id == written || (!digits.is_empty() && n.normalized_number == digits))
}
