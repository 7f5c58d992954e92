//! The sandbox: what `kairo serve` runs when no WhatsApp account is
//! configured, so that everything in the README can be tried on one machine.
//!
//! - The demo catalogue (`fixtures/catalog.json`, built into the binary) is
//!   registered: its account, numbers and templates, which the example
//!   workflows use.
//! - Sends go to the sandbox channel: recorded in the inbox (and the record
//!   file, when set), never sent.
//! - The webhook verifies signatures with [`SANDBOX_APP_SECRET`], so that
//!   `kairo sandbox inbound` can inject a signed inbound message (a contact
//!   sending YES, say) through the real webhook path.

use std::process::ExitCode;

use crate::config::Config;
use anyhow::{Context, Result};
use hmac::{KeyInit, Mac};
use kairo_core::clock::Clock;
use kairo_core::ids::{ThreadId, Wamid};
use kairo_core::phone::PhoneDigits;
use kairo_core::secret::Secret;
use kairo_core::status::UserRole;
use kairo_store::{NewAccount, NewPhoneNumber, NewTemplate, Store};
use kairo_workflow::Catalog;

/// The demo catalogue the sandbox registers.
const DEMO_CATALOG: &str = include_str!("../fixtures/catalog.json");
/// The app secret the sandbox webhook checks signatures with. Not a secret:
/// the sandbox sends nothing anywhere and listens on loopback by default.
pub const SANDBOX_APP_SECRET: &str = "kairo-sandbox-app-secret";
pub const SANDBOX_VERIFY_TOKEN: &str = "kairo-sandbox-verify-token";

/// Whether `kairo serve` runs as the sandbox: no WhatsApp account configured.
pub fn active(config: &Config) -> bool {
    config.whatsapp.accounts.is_empty()
}

fn demo_catalog() -> Catalog {
    serde_json::from_str(DEMO_CATALOG).expect("the demo catalogue built into the binary is valid")
}

/// Registers the demo catalogue's account, numbers and templates.
pub async fn register(store: &Store) -> Result<()> {
    let now = kairo_core::clock::SystemClock.now();
    for account in demo_catalog().accounts {
        let new = NewAccount { waba_id: account.waba_id.clone(), name: "Sandbox".into(), portfolio_id: None };
        let stored = store.upsert_account(new, now).await?;
        for number in &account.numbers {
            let digits = PhoneDigits::of(&number.display_phone_number).into_string();
            let new = NewPhoneNumber {
                account_id: stored.id,
                graph_id: number.id.clone(),
                display_number: number.display_phone_number.clone(),
                normalized_number: digits,
                verified_name: Some("Kairo Sandbox".into()),
                quality_rating: Some("GREEN".into()),
                throughput_mps: 80,
                messaging_limit_tier: None,
            };
            store.upsert_phone_number(new, now).await?;
        }
        for template in &account.templates {
            let new = NewTemplate {
                account_id: stored.id,
                graph_id: format!("sandbox-{}-{}", template.name, template.language),
                name: template.name.clone(),
                language: template.language.clone(),
                status: template.status.clone(),
                category: template.category.clone(),
                parameter_format: template.parameter_format.clone(),
                components: serde_json::Value::Array(template.components.clone()),
            };
            store.upsert_template(new, now).await?;
        }
    }
    seed_people(store, now).await
}

/// The demo people: an admin and, in each team the example workflows
/// assign to, an agent. (e-mail, name, role, team)
pub const DEMO_PEOPLE: &[(&str, &str, UserRole, Option<&str>)] = &[
    ("admin@sandbox.kairo.test", "Ada Admin", UserRole::Admin, None),
    ("sam@sandbox.kairo.test", "Sam Support", UserRole::Agent, Some("Support")),
    ("sally@sandbox.kairo.test", "Sally Sales", UserRole::Agent, Some("Sales")),
];

/// The demo people's password in the sandbox (printed in the banner; the
/// sandbox listens on loopback by default and sends nothing anywhere).
pub const DEMO_PASSWORD: &str = "kairo-sandbox";

/// Creates the demo users and teams that are missing, and gives a demo
/// user without a password the demo one; leaves the others.
async fn seed_people(store: &Store, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
    let users = store.list_users().await?;
    let teams = store.list_teams().await?;
    for (email, name, role, team) in DEMO_PEOPLE {
        let user = match users.iter().find(|u| u.email == *email) {
            Some(user) => user.clone(),
            None => kairo_engine::people::create_user(store, email, name, *role, now).await?,
        };
        if store.password_of(user.id).await?.is_none() {
            kairo_engine::people::choose_password(store, &user, DEMO_PASSWORD, now).await?;
        }
        let Some(team_name) = team else { continue };
        let (team, members) = match teams.iter().find(|(t, _)| t.name == *team_name) {
            Some((team, members)) => (team.clone(), members.clone()),
            None => (store.insert_team(team_name, now).await?, Vec::new()),
        };
        if !members.contains(&user.id) {
            store.add_team_member(team.id, user.id, now).await?;
        }
    }
    Ok(())
}

/// The banner `kairo serve` prints in sandbox mode.
pub fn announce(listen: &str) {
    let numbers: Vec<String> =
        demo_catalog().accounts.iter().flat_map(|a| a.numbers.iter().map(|n| n.display_phone_number.clone())).collect();
    eprintln!(
        "\n  SANDBOX MODE: no WhatsApp account is configured.\n  \
         Nothing is sent to WhatsApp: sends are recorded in the inbox (GET /v1/threads).\n  \
         Demo numbers: {}.\n  \
         Demo people (password {DEMO_PASSWORD}): {}.\n  \
         Try a contact opting in:  kairo sandbox inbound --from \"+44 7700 900123\" --text YES --url http://{listen}\n  \
         Configure [whatsapp] in kairo.toml (docs/operations.md) to send for real.\n",
        numbers.join(", "),
        DEMO_PEOPLE
            .iter()
            .map(|(email, _, role, team)| match team {
                Some(team) => format!("{email} ({}, {team})", role.as_str()),
                None => format!("{email} ({})", role.as_str()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    tracing::warn!("sandbox mode: no WhatsApp account configured; sends are recorded, not sent");
}

/// What `kairo sandbox inbound` sends.
#[derive(Debug)]
pub struct Inbound<'a> {
    pub from: &'a str,
    pub text: &'a str,
    pub to: Option<&'a str>,
    pub name: Option<&'a str>,
    pub url: Option<&'a str>,
}

/// Posts a signed inbound text message to a running `kairo serve`.
pub async fn inbound(config: &Config, args: Inbound<'_>) -> Result<ExitCode> {
    let from = kairo_core::phone::normalize_phone(args.from).map_err(|e| crate::UsageError(e.to_string()))?;
    let catalog = demo_catalog();
    let found = match args.to {
        Some(to) => catalog.find_number(to),
        None => catalog.accounts.iter().find_map(|a| a.numbers.first().map(|n| (a, n))),
    };
    let (account, number) = found.ok_or_else(|| {
        let known: Vec<&str> = catalog.numbers().map(|n| n.display_phone_number.as_str()).collect();
        crate::UsageError(format!(
            "no sandbox number `{}`: use one of {}",
            args.to.unwrap_or_default(),
            known.join(", ")
        ))
    })?;
    let now = kairo_core::clock::SystemClock.now();
    let wamid = format!("wamid.sandbox.in.{}", uuid::Uuid::now_v7().simple());
    let body = serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": account.waba_id,
            "changes": [{
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": PhoneDigits::of(&number.display_phone_number).into_string(),
                        "phone_number_id": number.id,
                    },
                    "contacts": [{ "profile": { "name": args.name.unwrap_or("Sandbox contact") }, "wa_id": from }],
                    "messages": [{
                        "from": from,
                        "id": wamid,
                        "timestamp": now.timestamp().to_string(),
                        "text": { "body": args.text },
                        "type": "text",
                    }],
                },
                "field": "messages",
            }],
        }],
    });
    let bytes = serde_json::to_vec(&body).context("writing the webhook body")?;
    let secret = config.whatsapp.app_secret.clone().unwrap_or_else(|| Secret::new(SANDBOX_APP_SECRET));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key");
    mac.update(&bytes);
    let signature: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let base = args.url.map_or_else(|| format!("http://{}", config.listen), str::to_string);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
    let response = client
        .post(format!("{}/webhooks/whatsapp", base.trim_end_matches('/')))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", format!("sha256={signature}"))
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("cannot reach kairo serve at {base}: is it running? (--url sets where)"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        anyhow::bail!("kairo serve answered {status}: {text}");
    }
    let delivered = format!(
        "inbound message from +{from} to {}: \"{}\" delivered to the webhook",
        number.display_phone_number, args.text
    );
    match in_the_inbox(config, &Wamid(wamid)).await {
        Some(thread) => println!("{delivered}; in the inbox, thread {thread}"),
        None => println!(
            "{delivered}; not in this database's inbox yet (still being applied, or kairo serve uses another database than {})",
            config.database_url
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The thread of the message once `kairo serve` has applied its webhook to
/// the inbox (it answers as soon as the delivery is journaled, and applies
/// it a moment later), so that what the user does next (`curl /v1/threads`)
/// sees it. None when the database cannot be read or the message is not
/// there within a few seconds.
async fn in_the_inbox(config: &Config, wamid: &Wamid) -> Option<ThreadId> {
    let store = Store::open_existing(&config.database_url, config.database.pool()).await.ok()?;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < until {
        // An error (a database without Kairo's tables) ends the wait.
        if let Some(message) = store.message_by_wamid(wamid).await.ok()? {
            return Some(message.thread_id);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    None
}
