//! `kairo token`: API tokens created, listed and revoked.

use std::process::ExitCode;

use crate::config::Config;
use crate::{TokenAction, UsageError, open_existing};
use anyhow::Result;
use kairo_core::clock::Clock;

pub async fn token(config: &Config, action: TokenAction) -> Result<ExitCode> {
    use kairo_api::auth::{Scope, TokenError, create_token};
    let store = open_existing(config).await?;
    let now = kairo_core::clock::SystemClock.now();
    match action {
        TokenAction::Create { name, scopes } => {
            let mut parsed = Vec::new();
            for scope in &scopes {
                let found = Scope::parse(scope)
                    .ok_or_else(|| UsageError(format!("unknown scope `{scope}`: use admin, enroll or inbox")))?;
                if !parsed.contains(&found) {
                    parsed.push(found);
                }
            }
            let created = match create_token(&store, &name, &parsed, now).await {
                Ok(created) => created,
                Err(err @ (TokenError::NameTaken(_) | TokenError::EmptyName)) => {
                    return Err(UsageError(err.to_string()).into());
                }
                Err(TokenError::Store(err)) => return Err(err.into()),
            };
            let scopes: Vec<&str> = parsed.iter().map(|s| s.as_str()).collect();
            eprintln!(
                "token `{}` created with scope {} in {}; it is shown once, keep it now:",
                created.record.name,
                scopes.join(", "),
                store.url()
            );
            println!("{}", created.secret.expose());
        }
        TokenAction::List => {
            for t in store.api_tokens().await? {
                let scopes: Vec<String> = t
                    .scopes
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let state = match t.revoked_at {
                    Some(at) => format!("revoked {}", at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    None => "live".to_string(),
                };
                println!(
                    "{:<24} {:<20} created {}  {}",
                    t.name,
                    scopes.join(","),
                    t.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    state
                );
            }
        }
        TokenAction::Revoke { name } => {
            if !store.revoke_api_token(&name, now).await? {
                return Err(UsageError(format!("no live token named `{name}` (kairo token list shows them)")).into());
            }
            println!("token `{name}` revoked");
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
