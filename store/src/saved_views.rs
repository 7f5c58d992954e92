//! Saved views of the inbox: a named thread filter.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{EntityTrait, QueryOrder};

use super::entities::saved_view;
use super::{Store, StoreError};
use kairo_core::ids::{SavedViewId, UserId};

pub type SavedView = saved_view::Model;

#[derive(Debug, Clone)]
pub struct NewSavedView {
    pub name: String,
    pub owner_user_id: Option<UserId>,
    pub filter: serde_json::Value,
}

impl Store {
    pub async fn insert_saved_view(&self, new: NewSavedView, now: DateTime<Utc>) -> Result<SavedView, StoreError> {
        let name = new.name.clone();
        let row = saved_view::ActiveModel {
            id: Set(SavedViewId::new()),
            name: Set(new.name),
            owner_user_id: Set(new.owner_user_id),
            filter: Set(new.filter),
            created_at: Set(now),
            updated_at: Set(now),
        };
        saved_view::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("saved view {name}")))
    }

    /// Renames a saved view or replaces its filter; `None` when there is
    /// no such view.
    pub async fn update_saved_view(
        &self,
        id: SavedViewId,
        name: Option<String>,
        filter: Option<serde_json::Value>,
        now: DateTime<Utc>,
    ) -> Result<Option<SavedView>, StoreError> {
        let Some(view) = self.saved_view(id).await? else { return Ok(None) };
        let mut row: saved_view::ActiveModel = view.into();
        if let Some(name) = name.clone() {
            row.name = Set(name);
        }
        if let Some(filter) = filter {
            row.filter = Set(filter);
        }
        row.updated_at = Set(now);
        sea_orm::ActiveModelTrait::update(row, &self.db)
            .await
            .map(Some)
            .map_err(|e| self.insert_error(e, || format!("saved view {}", name.unwrap_or_default())))
    }

    /// Deletes a saved view; false when there was none.
    pub async fn delete_saved_view(&self, id: SavedViewId) -> Result<bool, StoreError> {
        let done = saved_view::Entity::delete_by_id(id).exec(&self.db).await.map_err(|e| self.query_error(e))?;
        Ok(done.rows_affected > 0)
    }

    pub async fn saved_view(&self, id: SavedViewId) -> Result<Option<SavedView>, StoreError> {
        saved_view::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    pub async fn saved_views(&self) -> Result<Vec<SavedView>, StoreError> {
        saved_view::Entity::find()
            .order_by_asc(saved_view::Column::Name)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }
}
