//! Workflows: the YAML model, parsing with positions, validation, content
//! hashes, the catalogue sends are checked against, the compiled plan and the
//! folder watch. Storing versions is the engine's `registry`.
//!
//! Invariants:
//! - A file that fails validation is never stored or run; the previous version
//!   of that workflow keeps running.
//! - Validation reports every problem it can find in one run, each with
//!   `path:line:column`; only a YAML structure error stops it early (the rest
//!   of the file cannot be read without guessing).
//! - A version's content hash covers the parsed workflow, not its text, so
//!   whitespace and comments do not make a new version.

pub mod catalog;
pub mod compiled;
pub mod condition;
pub mod duration;
pub mod expr;
pub mod located;
pub mod matching;
pub mod model;
mod validate;
pub mod watch;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use self::catalog::Catalog;
pub use self::located::{Located, Pos};
pub use self::model::Workflow;

/// One problem in a workflow file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.column, self.message)
    }
}

impl Diagnostic {
    pub fn new(path: &Path, pos: Pos, message: impl Into<String>) -> Self {
        Self { path: path.to_path_buf(), line: pos.line, column: pos.column, message: message.into() }
    }

    /// The diagnostic, the source line it points at, and a caret under the column.
    pub fn render(&self, source: &str) -> String {
        let mut out = self.to_string();
        if let Some(text) = self.line.checked_sub(1).and_then(|i| source.lines().nth(i)) {
            let gutter = self.line.to_string();
            let pad = " ".repeat(gutter.len());
            let caret_at: String =
                text.chars().take(self.column.saturating_sub(1)).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
            out.push_str(&format!("\n{pad} |\n{gutter} | {text}\n{pad} | {caret_at}^"));
        }
        out
    }
}

/// A workflow that parsed and passed validation.
#[derive(Debug, Clone)]
pub struct ValidWorkflow {
    pub workflow: Workflow,
    pub path: PathBuf,
    pub source: String,
    /// `sha256:<hex>` of the canonical content.
    pub content_hash: String,
    /// What is allowed but probably not meant; the workflow loads.
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates one workflow file's text. `catalog`, when given,
/// checks numbers and templates too.
pub fn check(path: &Path, source: &str, catalog: Option<&Catalog>) -> Result<ValidWorkflow, Vec<Diagnostic>> {
    let workflow = parse(path, source).map_err(|d| vec![d])?;
    let (problems, warnings) = validate::validate(&workflow, path, catalog);
    if !problems.is_empty() {
        return Err(problems);
    }
    let content_hash = content_hash(&workflow);
    Ok(ValidWorkflow { workflow, path: path.to_path_buf(), source: source.to_string(), content_hash, warnings })
}

/// Parses YAML into the model; a structural problem becomes one diagnostic.
pub fn parse(path: &Path, source: &str) -> Result<Workflow, Diagnostic> {
    serde_saphyr::from_str::<Workflow>(source).map_err(|err| {
        let pos = err.location().map_or(Pos { line: 1, column: 1 }, |l| Pos {
            line: l.line().max(1) as usize,
            column: l.column().max(1) as usize,
        });
        Diagnostic::new(path, pos, describe_yaml_error(&err))
    })
}

fn describe_yaml_error(err: &serde_saphyr::Error) -> String {
    match err.without_snippet() {
        serde_saphyr::Error::SerdeUnknownField { field, expected, .. } => {
            let mut message = format!("unknown field `{field}`");
            if let Some(best) = closest(field, expected.iter().copied()) {
                message.push_str(&format!(": did you mean `{best}`?"));
            } else {
                message.push_str(&format!("; expected one of {}", list(expected.iter().copied())));
            }
            message
        }
        serde_saphyr::Error::SerdeUnknownVariant { variant, expected, .. } => {
            let mut message = format!("unknown value `{variant}`");
            if let Some(best) = closest(variant, expected.iter().copied()) {
                message.push_str(&format!(": did you mean `{best}`?"));
            } else {
                message.push_str(&format!("; expected one of {}", list(expected.iter().copied())));
            }
            message
        }
        serde_saphyr::Error::SerdeMissingField { field, .. } => format!("missing field `{field}`"),
        other => {
            // serde-saphyr appends " at line L, column C"; the prefix says it already.
            let text = other.to_string();
            let text = text.lines().next().unwrap_or_default().to_string();
            let text = match text.rfind(" at line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            match text.as_str() {
                "invalid u8" | "invalid u16" | "invalid u32" | "invalid u64" | "invalid usize" => {
                    "expected a whole number (0 or more)".to_string()
                }
                "invalid i32" | "invalid i64" => "expected a whole number".to_string(),
                "invalid bool" => "expected true or false".to_string(),
                _ if text.contains("DuplicateKeyPolicy") => {
                    let key = text
                        .strip_prefix("duplicate mapping key: ")
                        .and_then(|rest| rest.split(", set DuplicateKeyPolicy").next())
                        .map(|k| format!(" `{}`", k.trim()))
                        .unwrap_or_default();
                    format!("the key{key} appears twice in this mapping: keep one (a later one would silently win)")
                }
                _ => text,
            }
        }
    }
}

/// The candidate closest to `word`, if it is close enough to be a typo.
pub(crate) fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(distance, c)| *distance <= (c.len() / 3).max(1) && *distance < word.len().min(c.len()))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

pub(crate) fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
}

/// The hash of the canonical content: the parsed model as JSON.
pub fn content_hash(workflow: &Workflow) -> String {
    let canonical = serde_json::to_string(workflow).expect("a parsed workflow serialises to JSON");
    let digest = Sha256::digest(canonical.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The JSON Schema of the workflow format, for editors.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Workflow)).expect("a JSON Schema serialises to JSON")
}

/// Workflow files under `paths`: files as given, folders searched (not
/// recursively) for `*.yaml` and `*.yml`, sorted.
pub fn discover(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            for entry in std::fs::read_dir(path)? {
                let file = entry?.path();
                if matches!(file.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                    files.push(file);
                }
            }
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    Ok(files)
}
