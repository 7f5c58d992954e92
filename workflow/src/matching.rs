//! How inbound text is compared with keywords and text matches: trimmed,
//! NFKC-normalised (so full-width `ＹＥＳ` is `YES`) and case-folded.

use super::model::{InboundMessageTrigger, TextMatch};
use kairo_core::text::normalize;

impl InboundMessageTrigger {
    /// Whether an inbound message's text fires this trigger. With neither
    /// keywords nor a text match, every message does.
    pub fn matches(&self, text: &str) -> bool {
        let normalized = normalize(text);
        let keyword = self.keywords.is_empty() || self.keywords.iter().any(|k| normalize(k) == normalized);
        let text_match = self.text.as_ref().is_none_or(|m| m.matches(&normalized));
        keyword && text_match
    }
}

impl TextMatch {
    fn matches(&self, normalized: &str) -> bool {
        if let Some(exact) = &self.exact {
            return normalize(exact) == normalized;
        }
        if let Some(needle) = &self.contains {
            return normalized.contains(&normalize(needle));
        }
        if let Some(pattern) = &self.regex {
            // Validation rejected invalid patterns; a pattern that still fails matches nothing.
            return regex::RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .is_ok_and(|re| re.is_match(normalized));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::located::{Located, Pos};

    fn trigger(keywords: &[&str], text: Option<TextMatch>) -> InboundMessageTrigger {
        InboundMessageTrigger {
            number: Located::new("1".into(), Pos::default()),
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
            text,
        }
    }

    #[test]
    fn keywords_match_across_case_width_and_spaces() {
        let t = trigger(&["YES", "START"], None);
        for yes in ["YES", "yes", "  Yes \n", "ＹＥＳ", "ｓｔａｒｔ"] {
            assert!(t.matches(yes), "{yes:?}");
        }
        for no in ["yes please", "YE S", "no"] {
            assert!(!t.matches(no), "{no:?}");
        }
    }

    #[test]
    fn text_matches() {
        let contains = trigger(&[], Some(TextMatch { contains: Some("Price".into()), ..TextMatch::default() }));
        assert!(contains.matches("what is the PRICE?"));
        let regex = trigger(
            &[],
            Some(TextMatch {
                regex: Some(Located::new(r"^order\s+\d+$".into(), Pos::default())),
                ..TextMatch::default()
            }),
        );
        assert!(regex.matches("Order 42"));
        assert!(!regex.matches("my order 42"));
        assert!(trigger(&[], None).matches("anything"));
    }
}
