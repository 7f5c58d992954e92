//! A workflow version ready to run: the parsed model plus the lookups the
//! runtime needs (a step by id, the step after another).

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::ids::{WorkflowId, WorkflowVersionId};
use crate::store::{PhoneNumber, WorkflowVersion};
use crate::workflow::condition::Condition;
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
    /// Every condition of the workflow (goal, exits, branches), parsed once
    /// when the version is loaded, by its text.
    conditions: HashMap<String, Condition>,
}

impl Plan {
    /// Parses a stored version. A stored version passed validation when it
    /// was registered, so a parse error here means the stored row is damaged.
    pub fn from_version(version: &WorkflowVersion, registered_at: DateTime<Utc>) -> Result<Plan, String> {
        let name = format!("workflow version {} (v{})", version.id, version.version);
        let model = crate::workflow::parse(Path::new(&name), &version.source).map_err(|d| d.to_string())?;
        let index = model.steps.iter().enumerate().map(|(i, s)| (s.id.value.clone(), i)).collect();
        let mut texts: Vec<&str> = Vec::new();
        texts.extend(model.goal.iter().map(|g| g.condition.value.as_str()));
        texts.extend(model.exit_when.iter().filter_map(|e| e.condition.as_ref()).map(|c| c.value.as_str()));
        for step in model.steps.iter() {
            for arm in step.branch.iter().flat_map(|arms| arms.iter()) {
                texts.extend(arm.condition.as_ref().map(|c| c.value.as_str()));
            }
        }
        let mut conditions = HashMap::new();
        for text in texts {
            let parsed = Condition::parse(text).map_err(|e| format!("{name}: condition `{text}`: {}", e.message))?;
            conditions.insert(text.to_string(), parsed);
        }
        Ok(Plan {
            conditions,
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

    /// A condition of this workflow, parsed when the version was loaded.
    /// False for a text that is not one of the workflow's conditions.
    pub fn holds(&self, condition: &str, context: &serde_json::Value) -> bool {
        self.conditions.get(condition).is_some_and(|c| c.evaluate(context))
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
