//! `kairo user`: the people who sign in to the inbox, created and given
//! passwords from the command line (the first admin of a new install
//! comes from here).

use std::process::ExitCode;

use crate::config::Config;
use crate::{UsageError, UserAction, open_existing};
use anyhow::Result;
use kairo_core::clock::Clock;
use kairo_core::status::UserRole;
use kairo_engine::people::{PeopleError, create_user, reset_password};

pub async fn user(config: &Config, action: UserAction) -> Result<ExitCode> {
    let store = open_existing(config).await?;
    let now = kairo_core::clock::SystemClock.now();
    let usage = |err: PeopleError| -> anyhow::Error {
        match err {
            PeopleError::Store(err) => err.into(),
            other => UsageError(other.to_string()).into(),
        }
    };
    match action {
        UserAction::Create { email, name, role } => {
            let role = UserRole::parse(&role)
                .ok_or_else(|| UsageError(format!("unknown role `{role}`: use admin or agent")))?;
            let user = create_user(&store, &email, &name, role, now).await.map_err(|err| match err {
                PeopleError::EmailTaken(email) => UsageError(format!(
                    "a user with e-mail {email} already exists: `kairo user password {email}` gives them a new password"
                ))
                .into(),
                other => usage(other),
            })?;
            let password = reset_password(&store, &user, now).await.map_err(usage)?;
            eprintln!(
                "{} <{}> created as {} in {}; their one-time password, shown once (the first sign-in chooses a new one):",
                user.name,
                user.email,
                user.role.as_str(),
                store.url()
            );
            println!("{}", password.expose());
        }
        UserAction::Password { email } => {
            let user = store
                .user_by_email(&email)
                .await?
                .ok_or_else(|| UsageError(format!("no user with e-mail {email} (kairo user list shows them)")))?;
            let password = reset_password(&store, &user, now).await.map_err(usage)?;
            eprintln!(
                "new one-time password for {} <{}>, shown once; their browsers are signed out{}:",
                user.name,
                user.email,
                if user.deactivated_at.is_some() { " (the user is deactivated: they cannot sign in)" } else { "" }
            );
            println!("{}", password.expose());
        }
        UserAction::List => {
            for user in store.list_users().await? {
                let state = match user.deactivated_at {
                    Some(at) => format!("deactivated {}", at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    None if store.password_of(user.id).await?.is_none() => "active, no password".to_string(),
                    None => "active".to_string(),
                };
                println!("{:<32} {:<24} {:<6} {}", user.email, user.name, user.role.as_str(), state);
            }
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
