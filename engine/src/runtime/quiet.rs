//! Quiet hours: a send goes only between `from` and `to` on the
//! recipient's clock, else it waits (the same attempt) for the next
//! allowed time.
//!
//! The recipient's zone is the contact's time zone property when the
//! workflow names one and it holds a valid IANA zone. Otherwise it comes
//! from the country of their phone number: a country with several zones
//! sends only when the hour is allowed in every one of them, so nobody is
//! messaged early in the west or late in the east (in the United States a
//! 09:00-20:00 window opens at 14:00 in New York, 09:00 in Honolulu). When
//! a country's zones share no allowed hour, the zone it lists first
//! decides. No phone number, or one whose country is unknown: UTC.

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use super::context::RunContext;
use super::country_zones::COUNTRY_ZONES;
use kairo_workflow::compiled::Quiet;

/// When a send outside the allowed hours may go: `None` when it may go now.
pub(super) fn quiet_hours_wait(quiet: &Quiet, ctx: &RunContext, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let (from, to) = (quiet.from, quiet.to);
    let zones = recipient_zones(quiet, ctx);
    let allowed = |zone: Tz, at: DateTime<Utc>| {
        let local = at.with_timezone(&zone).time();
        if from <= to { local >= from && local < to } else { local >= from || local < to }
    };
    if zones.iter().all(|zone| allowed(*zone, now)) {
        return None;
    }
    // Move to the next opening in a zone where it is still closed until
    // every zone is open at once; each step only moves forward.
    let mut at = now;
    for _ in 0..zones.len() * 4 {
        match zones.iter().find(|zone| !allowed(**zone, at)) {
            None => return Some(at),
            Some(closed) => at = next_local_time(*closed, from, at),
        }
    }
    // The zones never share an allowed hour: the first-listed one decides.
    let first = zones[0];
    if allowed(first, now) { None } else { Some(next_local_time(first, from, now)) }
}

/// The zones whose clocks decide, never empty.
fn recipient_zones(quiet: &Quiet, ctx: &RunContext) -> Vec<Tz> {
    let property = quiet
        .timezone_property
        .as_ref()
        .and_then(|p| ctx.contact.properties.get(p))
        .and_then(Value::as_str)
        .and_then(|z| z.trim().parse::<Tz>().ok());
    if let Some(zone) = property {
        return vec![zone];
    }
    let phone = [&ctx.contact.phone, &ctx.contact.mobile_phone, &ctx.contact.wa_id].into_iter().flatten().next();
    match phone.map(|p| country_zones(p)) {
        Some(zones) if !zones.is_empty() => zones,
        _ => vec![chrono_tz::UTC],
    }
}

/// The zones of the country a phone number (international, with or
/// without `+`) belongs to.
pub(super) fn country_zones(phone: &str) -> Vec<Tz> {
    let digits = kairo_core::phone::PhoneDigits::of(phone);
    let Ok(parsed) = phonenumber::parse(None, format!("+{digits}")) else { return Vec::new() };
    let Some(country) = parsed.country().id() else { return Vec::new() };
    let code: &str = country.as_ref();
    COUNTRY_ZONES
        .binary_search_by(|(c, _)| (*c).cmp(code))
        .map(|i| COUNTRY_ZONES[i].1.iter().filter_map(|z| z.parse::<Tz>().ok()).collect())
        .unwrap_or_default()
}

/// The next instant after `now` when the wall clock in `zone` reads `at`.
/// A time skipped by a daylight-saving jump falls on the first instant after it.
pub(super) fn next_local_time(zone: chrono_tz::Tz, at: NaiveTime, now: DateTime<Utc>) -> DateTime<Utc> {
    let local_today = now.with_timezone(&zone).date_naive();
    for days in 0..3 {
        let date = local_today + chrono::Duration::days(days);
        let naive = date.and_time(at);
        let candidate = match zone.from_local_datetime(&naive) {
            chrono::LocalResult::Single(t) => t.to_utc(),
            chrono::LocalResult::Ambiguous(first, _) => first.to_utc(),
            chrono::LocalResult::None => {
                let later = naive + chrono::Duration::hours(1);
                match zone.from_local_datetime(&later) {
                    chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.to_utc(),
                    chrono::LocalResult::None => continue,
                }
            }
        };
        if candidate > now {
            return candidate;
        }
    }
    now + chrono::Duration::days(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_zone_is_known_and_countries_are_sorted() {
        assert!(COUNTRY_ZONES.windows(2).all(|w| w[0].0 < w[1].0), "sorted for the binary search");
        for (country, zones) in COUNTRY_ZONES {
            for zone in *zones {
                assert!(zone.parse::<Tz>().is_ok(), "{country}: {zone}");
            }
        }
    }

    #[test]
    fn a_phone_number_gives_its_countrys_zones() {
        assert_eq!(country_zones("+44 20 7946 0000"), vec![chrono_tz::Europe::London]);
        assert_eq!(country_zones("919876543210"), vec![chrono_tz::Asia::Kolkata]);
        let us = country_zones("+1 212 555 0100");
        assert!(us.contains(&chrono_tz::America::New_York) && us.contains(&chrono_tz::Pacific::Honolulu));
        assert!(country_zones("not a number").is_empty());
    }
}
