//! The one form inbound text is compared in, by keyword triggers, text
//! matches and opt-in/opt-out keywords alike: NFKC-normalised (so full-width
//! `ＹＥＳ` is `YES`), trimmed and case-folded.

use unicode_normalization::UnicodeNormalization;

/// The form both sides of a comparison take.
pub fn normalize(text: &str) -> String {
    text.nfkc().collect::<String>().trim().to_lowercase()
}
