//! Phone numbers as Kairo stores them: the digits of the international
//! form (`+44 7700 900123` → `447700900123`), which is how WhatsApp's
//! `wa_id` spells them, so that an inbound message finds its contact.

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("`{0}` is not a phone number in international form: write it with its country code, as +44 7700 900123")]
    NotInternational(String),
    #[error("`{input}` is not a phone number: {reason}")]
    Invalid { input: String, reason: String },
}

/// The digits of the international form of `input`, which must start with
/// `+` and a country code (spaces, dashes, dots and brackets are ignored).
pub fn normalize_phone(input: &str) -> Result<String, PhoneError> {
    let trimmed = input.trim();
    if !trimmed.starts_with('+') && !trimmed.starts_with("00") {
        return Err(PhoneError::NotInternational(input.to_string()));
    }
    let with_plus = match trimmed.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => trimmed.to_string(),
    };
    let parsed = phonenumber::parse(None, &with_plus)
        .map_err(|e| PhoneError::Invalid { input: input.to_string(), reason: e.to_string() })?;
    let digits: String =
        parsed.format().mode(phonenumber::Mode::E164).to_string().chars().filter(char::is_ascii_digit).collect();
    if !(8..=15).contains(&digits.len()) {
        return Err(PhoneError::Invalid {
            input: input.to_string(),
            reason: "it has too few or too many digits".into(),
        });
    }
    Ok(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn international_forms_normalise_to_digits() {
        assert_eq!(normalize_phone("+44 7700 900123").as_deref(), Ok("447700900123"));
        assert_eq!(normalize_phone("+1 (555) 000-1111").as_deref(), Ok("15550001111"));
        assert_eq!(normalize_phone("0044 7700 900123").as_deref(), Ok("447700900123"));
    }

    #[test]
    fn local_or_garbage_numbers_are_refused() {
        assert!(matches!(normalize_phone("07700 900123"), Err(PhoneError::NotInternational(_))));
        assert!(matches!(normalize_phone("+12"), Err(PhoneError::Invalid { .. })));
        assert!(matches!(normalize_phone("+abc"), Err(PhoneError::Invalid { .. })));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        let once = normalize_phone("+49 30 901820").expect("valid");
        assert_eq!(normalize_phone(&format!("+{once}")).expect("valid"), once);
    }
}
