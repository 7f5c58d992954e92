//! What operators look at: a workflow's counts per step (the states of its
//! executions, the delivery of the messages its sends recorded, failures by
//! WhatsApp error code), a workflow's versions with their funnel, an
//! enrollment's history with each send's delivery, and the sends waiting to go.

use std::collections::BTreeMap;

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Statement, Value};
use serde::Serialize;

use super::entities::{message, step_execution};
use super::{Backend, Message, StepExecution, Store, StoreError, WorkflowVersion};
use kairo_core::ids::{EnrollmentId, WorkflowId, WorkflowVersionId};

/// One version's funnel: what a marketer watches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Funnel {
    /// Enrollments started.
    pub enrolled: u64,
    /// Messages WhatsApp accepted (every outbound message with a wamid).
    pub sent: u64,
    /// Messages delivered (read ones included).
    pub delivered: u64,
    pub read: u64,
    /// Enrollments whose contact wrote back after one of its messages.
    pub replied: u64,
    /// Messages that failed (status webhook `failed`).
    pub failed: u64,
    pub goal_met: u64,
}

/// A version with its enrollments by status and its funnel.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionReport {
    pub version: WorkflowVersion,
    pub by_status: BTreeMap<String, u64>,
    pub funnel: Funnel,
}

/// One step of a workflow, over all its enrollments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StepCounts {
    pub step_id: String,
    /// Executions per state (`succeeded`, `uncertain`, `pending`, …).
    pub states: BTreeMap<String, u64>,
    /// Messages the step sent, per delivery status (`sent`, `delivered`,
    /// `read`, `failed`).
    pub deliveries: BTreeMap<String, u64>,
    /// Failed messages per WhatsApp error code (131047 re-engagement,
    /// 131026 undeliverable, 131049 held back by Meta, …).
    pub failures: BTreeMap<i32, u64>,
    /// Messages WhatsApp took as `held_for_quality_assessment` and that
    /// have not been delivered yet.
    pub held: u64,
}

/// One execution in an enrollment's history, with the message it sent.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub execution: StepExecution,
    pub message: Option<Message>,
}

/// The unfinished steps of one step of one version.
#[derive(Debug, Clone)]
pub struct UnfinishedSteps {
    pub version: WorkflowVersionId,
    pub step_id: String,
    pub count: u64,
    pub first_due: chrono::DateTime<chrono::Utc>,
    pub last_due: chrono::DateTime<chrono::Utc>,
}

pub(super) fn step_entry<'a>(steps: &'a mut BTreeMap<String, StepCounts>, step: &str) -> &'a mut StepCounts {
    steps.entry(step.to_string()).or_insert_with(|| StepCounts { step_id: step.to_string(), ..Default::default() })
}

impl Store {
    /// Each version of `workflow`, newest first, with its enrollments by
    /// status and its funnel.
    pub async fn version_reports(&self, workflow: WorkflowId) -> Result<Vec<VersionReport>, StoreError> {
        let versions = self.workflow_versions(workflow).await?;
        let mut by_status: BTreeMap<WorkflowVersionId, BTreeMap<String, u64>> = BTreeMap::new();
        let mut funnels: BTreeMap<WorkflowVersionId, Funnel> = BTreeMap::new();
        let wf = || vec![Value::Uuid(Some(workflow.as_uuid()))];
        let rows = self
            .raw(
                "SELECT workflow_version_id, status, COUNT(*) FROM enrollments WHERE workflow_id = $1 \
                 GROUP BY workflow_version_id, status",
                wf(),
            )
            .await?;
        for row in rows {
            let (version, status, n) = self.version_count(&row)?;
            let status: String = status;
            let funnel = funnels.entry(version).or_default();
            funnel.enrolled += n;
            if status == "goal_met" {
                funnel.goal_met += n;
            }
            by_status.entry(version).or_default().insert(status, n);
        }
        let rows = self
            .raw(
                "SELECT e.workflow_version_id, m.status, COUNT(*) FROM messages m \
                 JOIN enrollments e ON e.id = m.enrollment_id \
                 WHERE e.workflow_id = $1 AND m.direction = 'outbound' AND m.wamid IS NOT NULL \
                 GROUP BY e.workflow_version_id, m.status",
                wf(),
            )
            .await?;
        for row in rows {
            let (version, status, n) = self.version_count(&row)?;
            let funnel = funnels.entry(version).or_default();
            funnel.sent += n;
            match status.as_str() {
                "delivered" => funnel.delivered += n,
                "read" => {
                    funnel.delivered += n;
                    funnel.read += n;
                }
                "failed" => funnel.failed += n,
                _ => {}
            }
        }
        let rows = self
            .raw(
                "SELECT e.workflow_version_id, 'replied', COUNT(DISTINCT e.id) FROM enrollments e \
                 JOIN messages m ON m.enrollment_id = e.id AND m.direction = 'outbound' \
                 JOIN messages r ON r.thread_id = m.thread_id AND r.direction = 'inbound' \
                   AND r.occurred_at > m.occurred_at \
                 WHERE e.workflow_id = $1 GROUP BY e.workflow_version_id",
                wf(),
            )
            .await?;
        for row in rows {
            let (version, _, n) = self.version_count(&row)?;
            funnels.entry(version).or_default().replied += n;
        }
        Ok(versions
            .into_iter()
            .map(|version| VersionReport {
                by_status: by_status.remove(&version.id).unwrap_or_default(),
                funnel: funnels.remove(&version.id).unwrap_or_default(),
                version,
            })
            .collect())
    }

    pub(super) async fn raw(&self, sql: &str, values: Vec<Value>) -> Result<Vec<sea_orm::QueryResult>, StoreError> {
        self.db
            .query_all_raw(Statement::from_sql_and_values(self.db_backend(), sql, values))
            .await
            .map_err(|e| self.query_error(e))
    }

    pub(super) fn version_count(
        &self,
        row: &sea_orm::QueryResult,
    ) -> Result<(WorkflowVersionId, String, u64), StoreError> {
        let q = |e| self.query_error(e);
        let version: uuid::Uuid = row.try_get_by_index(0).map_err(q)?;
        let label: String = row.try_get_by_index(1).map_err(q)?;
        let n: i64 = row.try_get_by_index(2).map_err(q)?;
        Ok((WorkflowVersionId(version), label, n.max(0) as u64))
    }

    /// Per step of `workflow` (every version): executions per state, and
    /// the delivery of the messages sent, failures by error code.
    pub async fn step_counts(&self, workflow: WorkflowId) -> Result<Vec<StepCounts>, StoreError> {
        let backend = self.db_backend();
        let q = |e| self.query_error(e);
        let mut steps: BTreeMap<String, StepCounts> = BTreeMap::new();
        let wf = || vec![Value::Uuid(Some(workflow.as_uuid()))];
        let states = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                "SELECT s.step_id, s.state, COUNT(*) FROM step_executions s \
                 JOIN enrollments e ON e.id = s.enrollment_id WHERE e.workflow_id = $1 GROUP BY s.step_id, s.state",
                wf(),
            ))
            .await
            .map_err(q)?;
        for row in states {
            let step: String = row.try_get_by_index(0).map_err(q)?;
            let state: String = row.try_get_by_index(1).map_err(q)?;
            let n: i64 = row.try_get_by_index(2).map_err(q)?;
            step_entry(&mut steps, &step).states.insert(state, n.max(0) as u64);
        }
        let payload = match self.backend {
            Backend::Postgres => "m.payload::text",
            Backend::Sqlite => "m.payload",
        };
        let deliveries = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "SELECT s.step_id, m.status, m.error_code, \
                     SUM(CASE WHEN {payload} LIKE '%held_for_quality_assessment%' THEN 1 ELSE 0 END), COUNT(*) \
                     FROM messages m JOIN step_executions s ON s.id = m.step_execution_id \
                     JOIN enrollments e ON e.id = m.enrollment_id WHERE e.workflow_id = $1 \
                     GROUP BY s.step_id, m.status, m.error_code"
                ),
                wf(),
            ))
            .await
            .map_err(q)?;
        for row in deliveries {
            let step: String = row.try_get_by_index(0).map_err(q)?;
            let status: String = row.try_get_by_index(1).map_err(q)?;
            let code: Option<i32> = row.try_get_by_index(2).map_err(q)?;
            let held: i64 = row.try_get_by_index(3).map_err(q)?;
            let n: i64 = row.try_get_by_index(4).map_err(q)?;
            let counts = step_entry(&mut steps, &step);
            *counts.deliveries.entry(status.clone()).or_default() += n.max(0) as u64;
            if status == "failed" {
                *counts.failures.entry(code.unwrap_or(0)).or_default() += n.max(0) as u64;
            }
            if status == "sent" {
                counts.held += held.max(0) as u64;
            }
        }
        Ok(steps.into_values().collect())
    }

    /// Every execution of an enrollment, oldest first, each with the
    /// message it sent (and that message's delivery and error).
    pub async fn enrollment_steps(&self, enrollment: EnrollmentId) -> Result<Vec<HistoryEntry>, StoreError> {
        let q = |e| self.query_error(e);
        let executions = step_execution::Entity::find()
            .filter(step_execution::Column::EnrollmentId.eq(enrollment))
            .order_by_asc(step_execution::Column::CreatedAt)
            .order_by_asc(step_execution::Column::Id)
            .all(&self.db)
            .await
            .map_err(q)?;
        let mut messages: BTreeMap<_, Message> = message::Entity::find()
            .filter(message::Column::EnrollmentId.eq(enrollment))
            .all(&self.db)
            .await
            .map_err(q)?
            .into_iter()
            .filter_map(|m| Some((m.step_execution_id?, m)))
            .collect();
        Ok(executions
            .into_iter()
            .map(|execution| HistoryEntry { message: messages.remove(&execution.id), execution })
            .collect())
    }

    /// Unfinished steps per workflow version and step, with the earliest
    /// and latest time one is due (a send held by quiet hours or a limit is
    /// due when that ends).
    pub async fn unfinished_step_spans(&self) -> Result<Vec<UnfinishedSteps>, StoreError> {
        let q = |e| self.query_error(e);
        let rows = self
            .db
            .query_all_raw(Statement::from_string(
                self.db_backend(),
                "SELECT e.workflow_version_id, s.step_id, COUNT(*), MIN(s.due_at), MAX(s.due_at) FROM step_executions s \
                 JOIN enrollments e ON e.id = s.enrollment_id \
                 WHERE s.state IN ('pending', 'claimed', 'attempting') GROUP BY e.workflow_version_id, s.step_id",
            ))
            .await
            .map_err(q)?;
        rows.into_iter()
            .map(|row| {
                let n: i64 = row.try_get_by_index(2).map_err(q)?;
                Ok(UnfinishedSteps {
                    version: row.try_get_by_index(0).map_err(q)?,
                    step_id: row.try_get_by_index(1).map_err(q)?,
                    count: n.max(0) as u64,
                    first_due: row.try_get_by_index(3).map_err(q)?,
                    last_due: row.try_get_by_index(4).map_err(q)?,
                })
            })
            .collect()
    }
}
