//! The checks of a handlebars expression: its syntax, the variables it
//! reads, and the step outputs it reads that a send of unknown outcome
//! leaves missing.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;

use super::Checker;
use crate::Diagnostic;
use crate::condition::ROOTS;
use crate::located::Located;

/// Helpers expressions may call (see docs/workflows.md).
const HELPERS: &[&str] = &["default", "upper", "lower", "date"];
/// Block keywords handlebars itself understands.
const KEYWORDS: &[&str] = &["if", "unless", "each", "with", "else", "this", "lookup"];

static MUSTACHE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{\{\{?([^}]*)\}?\}\}").expect("valid pattern"));
static STRING_LITERAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#""[^"]*"|'[^']*'"#).expect("valid pattern"));

impl Checker<'_> {
    /// A handlebars expression: its syntax, and the variables it reads.
    pub(super) fn expression(&mut self, text: &Located<String>, earlier: &BTreeSet<&str>) {
        if let Err(err) = handlebars::Template::compile(text) {
            let reason = err.reason().to_string();
            self.report(text.pos, format!("invalid expression `{}`: {reason}", **text));
            return;
        }
        for block in MUSTACHE.captures_iter(text) {
            let inner = block[1].trim().trim_start_matches(['#', '/', '^', '~', '&']).trim_end_matches('~');
            let inner = STRING_LITERAL.replace_all(inner, "\"\"");
            let defaulted = inner.split_whitespace().next() == Some("default");
            for (i, token) in inner.split_whitespace().enumerate() {
                if let Some(id) = token.strip_prefix("steps.").and_then(|rest| rest.split('.').next())
                    && self.uncertain_sends.contains(id)
                    && !defaulted
                {
                    let message = format!(
                        "`{token}` in `{}` is missing when the send's outcome is unknown (a crash mid-send; its \
                         `on_unknown_outcome` is `continue`), and then this step fails: write \
                         `{{{{default {token} \"\"}}}}`, or set `on_unknown_outcome: fail` on `{id}`",
                        **text
                    );
                    self.warnings.push(Diagnostic::new(self.path, text.pos, message));
                }
                if i == 0 && (HELPERS.contains(&token) || KEYWORDS.contains(&token)) {
                    continue;
                }
                if !looks_like_path(token) {
                    continue;
                }
                let root = token.split('.').next().unwrap_or_default();
                if !ROOTS.contains(&root) {
                    self.report(
                        text.pos,
                        format!("unknown variable `{token}` in `{}`: expressions read contact, trigger, steps.<id>.output, workflow and now", **text),
                    );
                    continue;
                }
                if root == "steps" {
                    let id = token.split('.').nth(1).unwrap_or_default();
                    if !self.step_ids.contains(id) {
                        self.report(text.pos, format!("`steps.{id}` in `{}` refers to no step", **text));
                    } else if !earlier.contains(id) {
                        self.report(
                            text.pos,
                            format!("`steps.{id}` in `{}` refers to a step that has not run yet", **text),
                        );
                    }
                }
            }
        }
    }
}

fn looks_like_path(token: &str) -> bool {
    let first = token.chars().next().unwrap_or('0');
    (first.is_alphabetic() || first == '_')
        && !token.contains('=')
        && !matches!(token, "true" | "false" | "null")
        && token.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
