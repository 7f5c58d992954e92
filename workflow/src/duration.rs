//! Durations as marketers write them: `30s`, `15m`, `2h`, `3d`, `1w`, or a
//! sum such as `1d12h`.

use std::time::Duration;

/// Why a text is not a duration; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration `{0}`: write a number and a unit (s, m, h, d, w), e.g. 30m, 3d or 1d12h")]
    Invalid(String),
    #[error("duration `{0}` is zero: a wait or timeout must be positive")]
    Zero(String),
}

/// Parses a duration.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let invalid = || DurationError::Invalid(text.to_string());
    if trimmed.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in trimmed.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(invalid()),
        };
        let amount: u64 = digits.parse().map_err(|_| invalid())?;
        total = amount.checked_mul(unit).and_then(|s| total.checked_add(s)).ok_or_else(invalid)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(invalid());
    }
    if total == 0 {
        return Err(DurationError::Zero(text.to_string()));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_sums() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(3 * 86_400)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(129_600)));
    }

    #[test]
    fn bad_durations_say_what_is_accepted() {
        for bad in ["", "3", "d", "3 days", "3x", "-1d", "99999999999999999999w"] {
            let err = parse_duration(bad).expect_err(bad);
            assert_eq!(err, DurationError::Invalid(bad.to_string()));
            assert!(err.to_string().contains("invalid duration"), "{bad}: {err}");
        }
        let zero = parse_duration("0m").expect_err("zero");
        assert_eq!(zero, DurationError::Zero("0m".into()));
        assert!(zero.to_string().contains("zero"));
    }
}
