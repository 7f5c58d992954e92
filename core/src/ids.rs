//! Typed ids, so that one kind of id can never be passed for another.
//!
//! Each is a UUID v7 (time-ordered, so rows insert in index order) stored in a
//! `uuid` column on PostgreSQL and a blob on SQLite. They derive sea-orm's value
//! type so the store's rows carry them directly.

use sea_orm::DeriveValueType;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, DeriveValueType)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        // Keys are UUIDs written by Kairo, never database sequences.
        impl sea_orm::TryFromU64 for $name {
            fn try_from_u64(_: u64) -> Result<Self, sea_orm::DbErr> {
                Err(sea_orm::DbErr::ConvertFromU64(stringify!($name)))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        /// Written as a UUID string in the API.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                uuid_schema()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    )*};
}

id_type! {
    /// A business portfolio (owns accounts; holds the messaging limit).
    PortfolioId;
    /// A WhatsApp Business Account.
    AccountId;
    /// One of an account's business phone numbers (Kairo's id, not the Graph API's).
    PhoneNumberId;
    /// A message template, in one language.
    TemplateId;
    ContactId;
    /// An inbox agent.
    UserId;
    TeamId;
    /// An inbox conversation of one contact on one business number.
    ThreadId;
    MessageId;
    WorkflowId;
    WorkflowVersionId;
    /// One contact's run through one workflow version.
    EnrollmentId;
    StepExecutionId;
    TimerId;
    /// An entry of the event log.
    EventId;
    ApiTokenId;
    SavedViewId;
    /// A streamed bulk enrollment.
    BulkJobId;
}

fn uuid_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))).into()
}

/// A WhatsApp message id (`wamid.…`), unique across the inbox.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, DeriveValueType, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Wamid(pub String);

impl std::fmt::Display for Wamid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
