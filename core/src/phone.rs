//! Phone numbers as Kairo stores them: the digits of the international
//! form (`+44 7700 900123` → `447700900123`), which is how WhatsApp's
//! `wa_id` spells them, so that an inbound message finds its contact.

/// The digits of a phone number however it is written (`+1 555-000-1111`
/// → `15550001111`): the form business numbers are matched in and
/// recipients are sent to. Unlike [`normalize_phone`] it checks nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PhoneDigits(String);

impl PhoneDigits {
    pub fn of(written: &str) -> PhoneDigits {
        PhoneDigits(written.chars().filter(char::is_ascii_digit).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether these are the digits of `written`, however it is written,
    /// without building its digits (a lookup compares against every number).
    pub fn are_those_of(&self, written: &str) -> bool {
        written.chars().filter(char::is_ascii_digit).eq(self.0.chars())
    }
}

/// Whether `written` names the business number whose Graph id is `graph_id`
/// and whose display form is `display`: the id itself, or the same digits
/// however they are written (`+1 555-000-1111`, `15550001111`). The one rule
/// workflows, the API, the CLI and the sandbox find a business number by.
pub fn names_number(written: &str, graph_id: &str, display: &str) -> bool {
    let digits = PhoneDigits::of(written);
    written.trim() == graph_id || (!digits.is_empty() && digits.are_those_of(display))
}

impl std::fmt::Display for PhoneDigits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for PhoneDigits {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<String> for PhoneDigits {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("`{0}` is not a phone number in international form: write it with its country code, as +44 7700 900123")]
    NotInternational(String),
    #[error("`{input}` is not a phone number: {reason}")]
    Invalid { input: String, reason: String },
}

/// The digits of the international form of `input`, which must start with
/// `+` and a country code (spaces, dashes, dots, slashes and brackets are
/// ignored; anything else, as a letter or a `*`, is refused).
pub fn normalize_phone(input: &str) -> Result<String, PhoneError> {
    let trimmed = input.trim();
    if !trimmed.starts_with('+') && !trimmed.starts_with("00") {
        return Err(PhoneError::NotInternational(input.to_string()));
    }
    let separator = |c: char| matches!(c, ' ' | '\u{a0}' | '.' | '-' | '\u{2010}'..='\u{2015}' | '/' | '(' | ')');
    if let Some(other) = trimmed[1..].chars().find(|c| !c.is_ascii_digit() && !separator(*c)) {
        return Err(PhoneError::Invalid {
            input: input.to_string(),
            reason: format!("`{other}` is neither a digit nor a separator (space, dash, dot, slash, bracket)"),
        });
    }
    let with_plus = match trimmed.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => trimmed.to_string(),
    };
    let parsed = phonenumber::parse(None, &with_plus)
        .map_err(|e| PhoneError::Invalid { input: input.to_string(), reason: e.to_string() })?;
    let digits = PhoneDigits::of(&parsed.format().mode(phonenumber::Mode::E164).to_string()).into_string();
    if !(8..=15).contains(&digits.len()) {
        return Err(PhoneError::Invalid {
            input: input.to_string(),
            reason: "it has too few or too many digits".into(),
        });
    }
    Ok(digits)
}

/// The form of phone number the API documents (its OpenAPI `pattern`):
/// `+`, a country code WhatsApp can reach, and 10 to 14 digits in all, the
/// first after the country code not 0. Every string of this form is taken
/// by [`normalize_phone`], which also takes spaces, dashes, dots, brackets
/// and other lengths from 8 to 15 digits; the document stays within what
/// always works (a national prefix or a transform rule of the country can
/// take a digit or add one).
pub fn documented_pattern() -> &'static str {
    static PATTERN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut by_length: [Vec<String>; 3] = Default::default();
        for code in 1..1000u16 {
            let geographic = phonenumber::metadata::DATABASE
                .by_code(&code)
                .is_some_and(|regions| regions.iter().any(|m| m.id() != "001"));
            if geographic {
                let text = code.to_string();
                by_length[text.len() - 1].push(text);
            }
        }
        let arms: Vec<String> = by_length
            .iter()
            .enumerate()
            .filter(|(_, codes)| !codes.is_empty())
            .map(|(i, codes)| {
                // 10 to 14 digits in all: the country code's, a first digit
                // that is not 0, and the rest.
                let (least, most) = (10 - (i + 1) - 1, 14 - (i + 1) - 1);
                format!("(?:{})[1-9][0-9]{{{least},{most}}}", codes.join("|"))
            })
            .collect();
        format!("^\\+(?:{})$", arms.join("|"))
    });
    &PATTERN
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers of the documented form, for every country code in it, all
    /// normalise (the document promises no more than the server takes).
    #[test]
    fn every_number_of_the_documented_form_is_taken() {
        let pattern = documented_pattern();
        let codes: Vec<&str> = pattern
            .trim_start_matches("^\\+(?:")
            .split(")[1-9]")
            .flat_map(|arm| arm.rsplit("(?:").next().unwrap_or_default().split('|'))
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        assert!(codes.len() > 200, "{} country codes: {pattern}", codes.len());
        assert!(codes.contains(&"44") && codes.contains(&"1") && codes.contains(&"351"), "{codes:?}");
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for code in codes {
            for total in 10..=14 {
                for _ in 0..8 {
                    let mut number = format!("+{code}");
                    while number.len() - 1 < total {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let digit = if number.len() - 1 == code.len() { 1 + seed % 9 } else { seed % 10 };
                        number.push(char::from(b'0' + digit as u8));
                    }
                    assert!(normalize_phone(&number).is_ok(), "{number}: {:?}", normalize_phone(&number));
                }
            }
        }
    }

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
        assert!(matches!(normalize_phone("+1420706660837*"), Err(PhoneError::Invalid { .. })));
        assert!(matches!(normalize_phone("+44 7700 900123 ext. 12"), Err(PhoneError::Invalid { .. })));
        assert!(matches!(normalize_phone("+1-800-FLOWERS"), Err(PhoneError::Invalid { .. })));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        let once = normalize_phone("+49 30 901820").expect("valid");
        assert_eq!(normalize_phone(&format!("+{once}")).expect("valid"), once);
    }
}
