//! People who sign in to the inbox: creating them with the rules every
//! entry point shares (the API, `kairo user`, the sandbox), and their
//! passwords.
//!
//! Invariants:
//! - A password is kept only as an argon2id PHC string (OWASP's parameters:
//!   19 MiB, 2 passes, 1 lane) and compared by argon2's own verifier.
//! - A password printed by Kairo (a new user's, a reset) is `one_time`:
//!   the first sign-in with it must choose a new one.
//! - Setting a password ends the user's other sessions.
//! - A browser session is known by a 256-bit secret in its cookie; the
//!   database keeps only the secret's SHA-256, so a copy of the database
//!   signs nobody in. A session ends at once when its user is deactivated.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};

use kairo_core::secret::Secret;
use kairo_core::status::UserRole;
use kairo_store::{NewUser, NewWebSession, Store, StoreError, User, WebSession};
use sha2::{Digest, Sha256};

/// How long a browser stays signed in without being used: a working day
/// and a night, as HubSpot's and Chatwoot's inboxes keep an agent in.
pub const SESSION_IDLE: chrono::Duration = chrono::Duration::hours(16);

/// A session's expiry moves on at most once a minute (a write per page
/// view otherwise).
const TOUCH_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// The shortest password a person may choose.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Why a user could not be created or given a password.
#[derive(Debug, thiserror::Error)]
pub enum PeopleError {
    #[error("`{0}` is not an e-mail address")]
    InvalidEmail(String),
    #[error("a user needs a name")]
    EmptyName,
    #[error("a user's name holds no control characters (line breaks, tabs…)")]
    ControlInName,
    #[error("a user with e-mail {0} already exists")]
    EmailTaken(String),
    #[error("no user with e-mail {0}")]
    UnknownEmail(String),
    #[error("a password needs at least {MIN_PASSWORD_CHARS} characters")]
    PasswordTooShort,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The e-mail as it is stored (trimmed, lowercased), when it is one.
pub fn normalize_email(email: &str) -> Result<String, PeopleError> {
    let normal = email.trim().to_lowercase();
    let valid = normal.contains('@')
        && !normal.starts_with('@')
        && !normal.ends_with('@')
        && !normal.chars().any(|c| c.is_control() || c.is_whitespace());
    if valid { Ok(normal) } else { Err(PeopleError::InvalidEmail(email.to_string())) }
}

/// Creates a user after checking the e-mail and the name.
pub async fn create_user(
    store: &Store,
    email: &str,
    name: &str,
    role: UserRole,
    now: DateTime<Utc>,
) -> Result<User, PeopleError> {
    let email = normalize_email(email)?;
    let name = name.trim();
    if name.is_empty() {
        return Err(PeopleError::EmptyName);
    }
    if name.chars().any(char::is_control) {
        return Err(PeopleError::ControlInName);
    }
    let new = NewUser { email: email.clone(), name: name.to_string(), role };
    match store.insert_user(new, now).await {
        Ok(user) => Ok(user),
        Err(StoreError::Duplicate { .. }) => Err(PeopleError::EmailTaken(email)),
        Err(err) => Err(err.into()),
    }
}

/// Gives a user a new one-time password and signs their browsers out;
/// returns the password, to show once.
pub async fn reset_password(store: &Store, user: &User, now: DateTime<Utc>) -> Result<Secret, PeopleError> {
    let password = one_time_password();
    let hash = hash_password(password.expose()).await;
    store.set_password(user.id, hash, true, now).await?;
    store.end_web_sessions_of(user.id).await?;
    Ok(password)
}

/// Sets a password the person chose (not one-time). The caller ends the
/// user's other sessions (it knows which one is the person's own).
pub async fn choose_password(
    store: &Store,
    user: &User,
    password: &str,
    now: DateTime<Utc>,
) -> Result<(), PeopleError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PeopleError::PasswordTooShort);
    }
    let hash = hash_password(password).await;
    store.set_password(user.id, hash, false, now).await?;
    Ok(())
}

/// Whether `password` is the user's; false when they have none. The hash
/// is checked off the async threads (argon2 takes tens of milliseconds on
/// purpose). Returns whether it was a one-time password too.
pub async fn check_password(store: &Store, user: &User, password: &str) -> Result<Option<bool>, PeopleError> {
    let Some(stored) = store.password_of(user.id).await? else {
        // Spend the same time as a real check, so that timing does not tell
        // which e-mails have a password.
        let _ = hash_password(password).await;
        return Ok(None);
    };
    let password = password.to_string();
    let hash = stored.hash.clone();
    let matches = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false);
    Ok(matches.then_some(stored.one_time))
}

/// An argon2id PHC string of `password` with a fresh 128-bit salt.
pub async fn hash_password(password: &str) -> String {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes()).expect("16 bytes is a valid salt");
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .expect("argon2's default parameters hash any password")
            .to_string()
    })
    .await
    .expect("the hashing task does not panic")
}

/// Why a sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The same answer for an unknown e-mail and a wrong password, so that
    /// sign-in does not tell which e-mails have an account.
    #[error("the e-mail or the password is not right")]
    WrongCredentials,
    #[error("this account is deactivated: ask an admin to reactivate it")]
    Deactivated,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Someone who gave the right password.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    /// The password was a one-time one: a new one must be chosen first.
    pub must_choose_password: bool,
}

/// Checks an e-mail and password.
pub async fn sign_in(store: &Store, email: &str, password: &str) -> Result<SignedIn, SignInError> {
    let Ok(email) = normalize_email(email) else {
        let _ = hash_password(password).await;
        return Err(SignInError::WrongCredentials);
    };
    let Some(user) = store.user_by_email(&email).await? else {
        let _ = hash_password(password).await;
        return Err(SignInError::WrongCredentials);
    };
    let checked = check_password(store, &user, password).await.map_err(|e| match e {
        PeopleError::Store(e) => SignInError::Store(e),
        _ => SignInError::WrongCredentials,
    })?;
    let Some(one_time) = checked else { return Err(SignInError::WrongCredentials) };
    if user.deactivated_at.is_some() {
        return Err(SignInError::Deactivated);
    }
    Ok(SignedIn { user, must_choose_password: one_time })
}

/// A new browser session: the cookie's secret (to set once, never kept)
/// and the stored session with its CSRF token.
pub async fn start_session(store: &Store, user: &User, now: DateTime<Utc>) -> Result<(Secret, WebSession), StoreError> {
    let cookie = random_token();
    let new = NewWebSession {
        id_hash: session_hash(cookie.expose()),
        user_id: user.id,
        csrf_token: random_token().expose().to_string(),
        expires_at: now + SESSION_IDLE,
    };
    let session = store.create_web_session(new, now).await?;
    Ok((cookie, session))
}

/// The session a cookie's secret opens and its user, when it has not
/// expired and the user is active; its expiry moves on as it is used.
pub async fn session_of(
    store: &Store,
    cookie: &str,
    now: DateTime<Utc>,
) -> Result<Option<(WebSession, User)>, StoreError> {
    let hash = session_hash(cookie);
    let Some((session, user)) = store.web_session(&hash, now).await? else { return Ok(None) };
    if now - session.last_seen_at >= TOUCH_EVERY {
        store.touch_web_session(&hash, now + SESSION_IDLE, now).await?;
    }
    Ok(Some((session, user)))
}

/// Signs one browser out.
pub async fn end_session(store: &Store, cookie: &str) -> Result<(), StoreError> {
    store.end_web_session(&session_hash(cookie)).await
}

/// What the database keeps of a cookie's secret.
pub fn session_hash(cookie: &str) -> String {
    Sha256::digest(cookie.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// 256 bits: three v4 UUIDs from the operating system's generator (366
/// random bits) through SHA-256, as 64 hex digits.
fn random_token() -> Secret {
    let mut hasher = Sha256::new();
    for _ in 0..3 {
        hasher.update(uuid::Uuid::new_v4().as_bytes());
    }
    Secret::new(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Sixteen characters from an alphabet without look-alikes (no 0/O, 1/l/I),
/// in groups of four: about 80 bits from the operating system's generator.
pub fn one_time_password() -> Secret {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let random = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
    let bytes = random.iter().flat_map(|u| u.as_bytes().iter().copied());
    let chars: Vec<char> = bytes.take(16).map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()])).collect();
    let text: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
    Secret::new(text.join("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hash = hash_password("correct horse battery").await;
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        let parsed = PasswordHash::new(&hash).expect("a PHC string");
        assert!(argon2::Argon2::default().verify_password(b"correct horse battery", &parsed).is_ok());
        assert!(argon2::Argon2::default().verify_password(b"correct horse batterz", &parsed).is_err());
        assert_ne!(hash, hash_password("correct horse battery").await, "each hash has its own salt");
    }

    #[test]
    fn one_time_passwords_are_long_and_differ() {
        let a = one_time_password();
        let b = one_time_password();
        assert_eq!(a.expose().len(), 19, "{}", a.expose());
        assert_eq!(a.expose().matches('-').count(), 3);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn emails_are_checked_and_lowercased() {
        assert_eq!(normalize_email("  Sam@Acme.Test ").expect("valid"), "sam@acme.test");
        for bad in ["sam", "@acme.test", "sam@", "s am@acme.test"] {
            assert!(matches!(normalize_email(bad), Err(PeopleError::InvalidEmail(_))), "{bad}");
        }
    }
}
