//! The floor plan, checked (#16): the properties the code's layout must keep,
//! measured from the sources at every run.
//!
//! - crates depend one way (each has a rank; a dependency points to a lower one);
//! - no module cycle inside a crate, between files or between the top-level
//!   modules (the crates of tomorrow);
//! - no file over 600 lines and no function over 80 (tests and generated tables
//!   aside);
//! - no `Result<_, String>` in library crates;
//! - WhatsApp error codes only in the WhatsApp crate, and the engine never reads
//!   a WhatsApp wire field;
//! - each table of the store is written by its concept's module only
//!   ([`WRITERS`]): an insert, update or delete of a table (through its
//!   entity, an active model, or SQL) anywhere else is a finding.
//!
//! What does not hold yet is listed in [`KNOWN`], each entry with its measure
//! today: an entry may only shrink, a new violation fails, and an entry that no
//! longer applies fails too (so the list is struck out as the moves land).
//! `cargo nextest run -E 'binary(structure)' --no-capture` prints the whole
//! measure.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use regex::Regex;

/// Crates of the workspace: directory, package name, rank. A crate may depend
/// only on crates of a lower rank.
const CRATES: &[(&str, &str, u32)] = &[
    ("migrations", "kairo-migrations", 0),
    ("core", "kairo-core", 0),
    ("workflow", "kairo-workflow", 1),
    ("store", "kairo-store", 1),
    ("engine", "kairo-engine", 2),
    ("api", "kairo-api", 3),
    ("whatsapp", "kairo-whatsapp", 2),
    (".", "kairo", 4),
];

/// Library crates: no `Result<_, String>` there.
const LIBRARIES: &[&str] = &["migrations", "core", "workflow", "store", "engine", "api", "whatsapp"];

/// The crate that speaks WhatsApp's wire format and knows its error codes.
const WHATSAPP_CRATE: &str = "whatsapp";

/// Files that are generated tables, left out of the size rules.
const GENERATED: &[&str] = &["engine/src/runtime/country_zones.rs"];

/// Which module of the store writes each table: the concept it belongs to.
/// A module is a file of `store/src`, or a folder for the concepts that span
/// several files (`steps/`).
const WRITERS: &[(&str, &str)] = &[
    ("business_portfolios", "numbers.rs"),
    ("whatsapp_accounts", "numbers.rs"),
    ("phone_numbers", "numbers.rs"),
    ("templates", "catalog.rs"),
    ("contacts", "contacts.rs"),
    ("consents", "consents.rs"),
    ("consent_events", "consents.rs"),
    ("users", "people.rs"),
    ("teams", "people.rs"),
    ("team_members", "people.rs"),
    ("assignment_rules", "people.rs"),
    ("user_passwords", "sessions.rs"),
    ("web_sessions", "sessions.rs"),
    ("threads", "threads/"),
    ("thread_events", "threads/"),
    ("thread_reads", "threads/"),
    ("messages", "messages.rs"),
    ("pending_statuses", "messages.rs"),
    ("workflows", "workflows.rs"),
    ("workflow_versions", "workflows.rs"),
    ("enrollments", "enrollments.rs"),
    ("step_executions", "steps/"),
    ("timers", "timers.rs"),
    ("schedule_ticks", "schedules.rs"),
    ("events", "events.rs"),
    ("api_tokens", "tokens.rs"),
    ("idempotency_keys", "idempotency.rs"),
    ("saved_views", "saved_views.rs"),
    ("webhook_deliveries", "journal.rs"),
    ("bulk_jobs", "bulk.rs"),
    ("bulk_job_rows", "bulk.rs"),
    ("send_pacing", "pacing.rs"),
    ("messaging_reach", "pacing.rs"),
];

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;

/// What does not hold yet: (rule, place, measure today). The place is a file,
/// `file::function`, or a cycle's members joined by ` <-> `, sorted.
const KNOWN: &[(&str, &str, usize)] = &[];

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Finding {
    rule: &'static str,
    place: String,
    measure: usize,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Source files of a crate (its `src/`), relative to the workspace root.
fn sources(krate: &str) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join(krate).join("src"), &mut files);
    let mut names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(root()).expect("under the root").to_string_lossy().replace('\\', "/"))
        .map(|p| p.trim_start_matches("./").to_string())
        .collect();
    names.sort();
    names
}

/// The lines of a file before its test module (`#[cfg(test)]` at column 0).
fn code_lines(file: &str) -> Vec<String> {
    let text = fs::read_to_string(root().join(file)).expect("a readable source file");
    text.lines().take_while(|line| !line.starts_with("#[cfg(test)]")).map(str::to_string).collect()
}

fn file_sizes(file: &str, lines: &[String], out: &mut Vec<Finding>) {
    if lines.len() > MAX_FILE_LINES && !GENERATED.contains(&file) {
        out.push(Finding { rule: "file over 600 lines", place: file.to_string(), measure: lines.len() });
    }
}

/// Functions longer than the limit: under rustfmt a body ends at the first
/// line that is the signature's indentation followed by `}`.
fn function_sizes(file: &str, lines: &[String], out: &mut Vec<Finding>) {
    if GENERATED.contains(&file) {
        return;
    }
    let start =
        Regex::new(r"^(\s*)(pub(\([a-z: ]+\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\S+\s+)?fn\s+(\w+)")
            .expect("regex");
    for (at, line) in lines.iter().enumerate() {
        let Some(found) = start.captures(line) else { continue };
        let indent = found.get(1).map_or("", |m| m.as_str());
        let name = &found[8];
        let close = format!("{indent}}}");
        let mut end = None;
        for (offset, later) in lines[at..].iter().enumerate() {
            if offset == 0 && (later.trim_end().ends_with('}') || later.trim_end().ends_with(';')) {
                end = Some(at);
                break;
            }
            if offset > 0 && later.trim_end().ends_with(';') && lines[at..at + offset].iter().all(|l| !l.contains('{'))
            {
                end = Some(at + offset); // a declaration without a body
                break;
            }
            if later.trim_end() == close {
                end = Some(at + offset);
                break;
            }
        }
        let end = end.unwrap_or(lines.len() - 1);
        let length = end - at + 1;
        if length > MAX_FN_LINES {
            out.push(Finding { rule: "function over 80 lines", place: format!("{file}::{name}"), measure: length });
        }
    }
}

fn string_errors(file: &str, lines: &[String], out: &mut Vec<Finding>) {
    let count = lines.iter().filter(|l| !l.trim_start().starts_with("//")).map(|l| string_results(l)).sum();
    if count > 0 {
        out.push(Finding { rule: "Result<_, String> in a library", place: file.to_string(), measure: count });
    }
}

/// How many `Result<…, String>` a line holds: the error type is the last
/// argument at the `Result`'s own depth (`Result<HashMap<K, String>, E>`
/// is not one; `Result<Result<T, String>, E>` is).
fn string_results(line: &str) -> usize {
    let mut count = 0;
    for (start, _) in line.match_indices("Result<") {
        if line[..start].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let args = &line[start + "Result<".len()..];
        let (mut depth, mut last_comma, mut end) = (0usize, None, None);
        for (i, c) in args.char_indices() {
            // The `>` of `->` closes nothing.
            if c == '>' && args[..i].ends_with('-') {
                continue;
            }
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' if depth == 0 => {
                    end = Some(i);
                    break;
                }
                '>' | ')' | ']' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => last_comma = Some(i),
                _ => {}
            }
        }
        if let (Some(comma), Some(end)) = (last_comma, end)
            && args[comma + 1..end].trim() == "String"
        {
            count += 1;
        }
    }
    count
}

/// WhatsApp's error codes (API.md section 9) and wire fields the engine must
/// not read: it sees error classes and throttle scopes, and typed values.
fn whatsapp_outside(file: &str, lines: &[String], out: &mut Vec<Finding>) {
    let codes = Regex::new(
        r"\b(130429|131056|131026|131047|131048|131049|131051|131000|132000|132001|132012|133010|368|470)\b",
    )
    .expect("regex");
    let fields = Regex::new(
        // A read is `value["field"]` or `.get("field")`; a list of column
        // names (`&["wa_id"]`) is not.
        r#"(\.get\(|[\w\])]\[)"(restriction_info|current_limit|messaging_limit_tier|error_data|wa_id|conversation|system|new_wa_id)""#,
    )
    .expect("regex");
    let code_count: usize = lines
        .iter()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| codes.find_iter(l.split("//").next().unwrap_or("")).count())
        .sum();
    if code_count > 0 {
        out.push(Finding {
            rule: "WhatsApp error code outside the WhatsApp crate",
            place: file.to_string(),
            measure: code_count,
        });
    }
    let field_count: usize =
        lines.iter().filter(|l| !l.trim_start().starts_with("//")).map(|l| fields.find_iter(l).count()).sum();
    if field_count > 0 {
        out.push(Finding {
            rule: "WhatsApp wire field read outside the WhatsApp crate",
            place: file.to_string(),
            measure: field_count,
        });
    }
}

/// The store's entities: module name and table (from `entities.rs`).
fn entities() -> Vec<(String, String)> {
    let text = fs::read_to_string(root().join("store/src/entities.rs")).expect("the store's entities");
    let entity = Regex::new(r#"entity!\((\w+), "(\w+)""#).expect("regex");
    entity.captures_iter(&text).map(|c| (c[1].to_string(), c[2].to_string())).collect()
}

/// Tables a store file writes that belong to another module, with the
/// number of writes: through the entity (`contact::Entity::insert`, …), an
/// active model (`contact::ActiveModel`, `into_active_model` of a row read
/// from it is counted where the model is named) or SQL text.
fn foreign_writes(file: &str, lines: &[String], entities: &[(String, String)], out: &mut Vec<Finding>) {
    let Some(module) = file.strip_prefix("store/src/") else { return };
    let owner_of = |table: &str| WRITERS.iter().find(|(t, _)| *t == table).map(|(_, m)| *m);
    let owns = |owner: &str| if owner.ends_with('/') { module.starts_with(owner) } else { module == owner };
    let sql = Regex::new(r"\b(?:INSERT INTO|UPDATE|DELETE FROM)\s+([a-z_]+)").expect("regex");
    let names: Vec<&str> = entities.iter().map(|(e, _)| e.as_str()).collect();
    let write = Regex::new(&format!(
        r"\b({})::(?:Entity::(?:insert|insert_many|update|update_many|delete|delete_many|delete_by_id)\b|ActiveModel\b)",
        names.join("|")
    ))
    .expect("regex");
    let table_of = |entity: &str| entities.iter().find(|(e, _)| e == entity).map(|(_, t)| t.clone());
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in lines.iter().filter(|l| !l.trim_start().starts_with("//")) {
        for found in write.captures_iter(line) {
            *counts.entry(table_of(&found[1]).expect("a known entity")).or_default() += 1;
        }
        for table in sql.captures_iter(line) {
            *counts.entry(table[1].to_string()).or_default() += 1;
        }
    }
    for (table, count) in counts {
        let Some(owner) = owner_of(&table) else { continue };
        if count > 0 && !owns(owner) {
            out.push(Finding {
                rule: "table written outside its module",
                place: format!("{file}::{table}"),
                measure: count,
            });
        }
    }
}

/// The module path of a file of a crate: `store/runtime.rs` -> `store::runtime`.
fn module_of(krate: &str, file: &str) -> String {
    let prefix = if krate == "." { "src/".to_string() } else { format!("{krate}/src/") };
    let inner = file.strip_prefix(&prefix).expect("a file of the crate").trim_end_matches(".rs");
    let inner = inner.strip_suffix("/mod").unwrap_or(inner);
    if inner == "lib" || inner == "main" { String::new() } else { inner.replace('/', "::") }
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into whole paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_string()];
    };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let close = tree.rfind('}').filter(|close| *close > open).unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[from..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|p| if p == "self" { prefix.to_string() } else { format!("{prefix}::{p}") })
        .collect()
}

/// The `use` statements and inline `crate::`/`super::` paths of a file, as
/// whole paths.
fn paths_of(lines: &[String]) -> Vec<String> {
    let code: Vec<&str> = lines.iter().map(|l| l.split("//").next().unwrap_or("")).collect();
    let text = code.join("\n");
    let uses = Regex::new(r"(?sm)^\s*(?:pub(?:\([a-z: ]+\))?\s+)?use\s+([^;]+);").expect("regex");
    let mut paths = Vec::new();
    for found in uses.captures_iter(&text) {
        paths.extend(expand(&found[1].split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    let rest = uses.replace_all(&text, "");
    let inline = Regex::new(r"\b(?:crate|super|self)(?:::\w+)+").expect("regex");
    paths.extend(inline.find_iter(&rest).map(|m| m.as_str().to_string()));
    paths
}

/// Resolves a path written in `module` to the module that defines what it
/// names, following a parent's `pub use self::child::Name`.
fn resolve(
    module: &str,
    path: &str,
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<(String, String), String>,
) -> Option<String> {
    let mut segments: Vec<&str> = path.split("::").collect();
    let mut base: Vec<String> =
        if module.is_empty() { vec![] } else { module.split("::").map(str::to_string).collect() };
    match segments.first().copied() {
        Some("crate") => {
            base.clear();
            segments.remove(0);
        }
        Some("super") => {
            while segments.first() == Some(&"super") {
                base.pop();
                segments.remove(0);
            }
        }
        Some("self") => {
            segments.remove(0);
        }
        _ => return None,
    }
    let mut at = base.join("::");
    for segment in segments {
        let next = if at.is_empty() { segment.to_string() } else { format!("{at}::{segment}") };
        if modules.contains(&next) {
            at = next;
            continue;
        }
        if let Some(defining) = reexports.get(&(at.clone(), segment.to_string())) {
            at = defining.clone();
        }
        break;
    }
    Some(at)
}

/// Strongly connected components of more than one member.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.keys().chain(edges.values().flatten()).collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(node) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for node in &nodes {
        if done.contains(*node) {
            continue;
        }
        let members: Vec<String> = nodes
            .iter()
            .filter(|other| reachable[*node].contains(**other) && reachable[**other].contains(*node))
            .map(|n| (*n).clone())
            .collect();
        done.extend(members.iter().cloned());
        if members.len() > 1 {
            found.push(members);
        }
    }
    found
}

fn module_cycles(krate: &str, files: &[String], out: &mut Vec<Finding>) {
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(krate, f)).collect();
    let lines: BTreeMap<String, Vec<String>> = files.iter().map(|f| (module_of(krate, f), code_lines(f))).collect();
    // A parent's `pub use self::child::{A, B}`: where A and B are defined.
    let mut reexports = BTreeMap::new();
    for (module, code) in &lines {
        for path in paths_of(code).iter().filter(|p| p.starts_with("self::")) {
            let segments: Vec<&str> = path.split("::").collect();
            if let (Some(name), Some(defining)) = (segments.last(), resolve(module, path, &modules, &BTreeMap::new()))
                && &defining != module
            {
                reexports.insert((module.clone(), (*name).to_string()), defining);
            }
        }
    }
    let mut files_graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut top_graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let top = |m: &str| m.split("::").next().unwrap_or("").to_string();
    for (module, code) in &lines {
        for path in paths_of(code) {
            let Some(target) = resolve(module, &path, &modules, &reexports) else { continue };
            // A parent naming its own children (declaring, re-exporting) is the
            // module's front door, not a dependency.
            let descendant = module.is_empty() || target.starts_with(&format!("{module}::"));
            if target == *module || descendant {
                continue;
            }
            files_graph.entry(module.clone()).or_default().insert(target.clone());
            if !module.is_empty() && !target.is_empty() && top(module) != top(&target) {
                top_graph.entry(top(module)).or_default().insert(top(&target));
            }
        }
    }
    let name = |krate: &str, m: &str| format!("{krate}:{}", if m.is_empty() { "crate" } else { m });
    for members in cycles(&files_graph) {
        let place = members.iter().map(|m| name(krate, m)).collect::<Vec<_>>().join(" <-> ");
        out.push(Finding { rule: "module cycle", place, measure: members.len() });
    }
    for members in cycles(&top_graph) {
        let place = members.iter().map(|m| name(krate, m)).collect::<Vec<_>>().join(" <-> ");
        out.push(Finding { rule: "cycle between top-level modules", place, measure: members.len() });
    }
}

fn crate_directions(out: &mut Vec<Finding>) {
    let rank = |package: &str| CRATES.iter().find(|(_, p, _)| *p == package).map(|(_, _, r)| *r);
    for (dir, package, own) in CRATES {
        let manifest = fs::read_to_string(root().join(dir).join("Cargo.toml")).expect("a manifest");
        let dependencies = manifest.split("[dependencies]").nth(1).unwrap_or("");
        let dependencies = dependencies.split("\n[").next().unwrap_or("");
        for line in dependencies.lines() {
            let Some(name) = line.split(['=', '.']).next().map(str::trim) else { continue };
            if !name.starts_with("kairo") {
                continue;
            }
            match rank(name) {
                Some(theirs) if theirs < *own => {}
                _ => out.push(Finding {
                    rule: "crate depends upward",
                    place: format!("{package} -> {name}"),
                    measure: 1,
                }),
            }
        }
    }
}

fn measure() -> Vec<Finding> {
    let mut out = Vec::new();
    crate_directions(&mut out);
    let tables = entities();
    for (krate, _, _) in CRATES {
        let files = sources(krate);
        for file in &files {
            let lines = code_lines(file);
            file_sizes(file, &lines, &mut out);
            function_sizes(file, &lines, &mut out);
            if LIBRARIES.contains(krate) {
                string_errors(file, &lines, &mut out);
            }
            if *krate != WHATSAPP_CRATE {
                whatsapp_outside(file, &lines, &mut out);
            }
            if *krate == "store" {
                foreign_writes(file, &lines, &tables, &mut out);
            }
        }
        module_cycles(krate, &files, &mut out);
    }
    out.sort();
    out
}

#[test]
fn the_floor_plan_holds_or_only_gets_better() {
    let found = measure();
    for finding in &found {
        println!("{}\t{}\t{}", finding.rule, finding.measure, finding.place);
    }
    println!("{} findings, {} known", found.len(), KNOWN.len());
    let mut problems = Vec::new();
    for finding in &found {
        match KNOWN.iter().find(|(rule, place, _)| *rule == finding.rule && *place == finding.place) {
            None => problems.push(format!("new: {} at {} ({})", finding.rule, finding.place, finding.measure)),
            Some((_, _, known)) if finding.measure > *known => problems
                .push(format!("worse: {} at {}: {} (known {known})", finding.rule, finding.place, finding.measure)),
            Some(_) => {}
        }
    }
    for (rule, place, known) in KNOWN {
        match found.iter().find(|f| f.rule == *rule && f.place == *place) {
            None => problems.push(format!("fixed, strike it from KNOWN: {rule} at {place}")),
            Some(f) if f.measure < *known => {
                problems.push(format!("better, lower KNOWN to {}: {rule} at {place} (known {known})", f.measure))
            }
            Some(_) => {}
        }
    }
    assert!(problems.is_empty(), "the floor plan changed:\n{}", problems.join("\n"));
}

#[test]
fn the_checks_see_what_they_claim() {
    let lines: Vec<String> = [
        "pub async fn short() -> Result<(), String> {",
        "    let x = 1;",
        "}",
        "fn declared(x: u8) -> u8;",
        "    pub(crate) fn long(&self) {",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain((0..90).map(|i| format!("        let a{i} = {i};")))
    .chain(["    }".to_string()])
    .collect();
    let mut out = Vec::new();
    function_sizes("x.rs", &lines, &mut out);
    string_errors("x.rs", &lines, &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].place, "x.rs::long");
    assert_eq!(out[0].measure, 92);
    assert_eq!(out[1].measure, 1);
    assert_eq!(string_results("fn a() -> Result<HashMap<WorkflowId, String>, ApiError> {"), 0);
    assert_eq!(string_results("fn b() -> Result<Result<(Option<u8>, u8), String>, StoreError> {"), 1);
    assert_eq!(string_results("let (tx, rx) = channel::<Result<Chunk, String>>(1); fn c(x: Result<u8, String>) {}"), 2);
    assert_eq!(string_results("fn d() -> io::Result<String> { MyResult<u8, String> }"), 0);
    assert_eq!(string_results("fn e() -> Result<Box<dyn Fn() -> u8>, String> {"), 1);
    let scoped: Vec<String> = ["    pub(in crate::runtime) async fn scoped(&self) {".to_string()]
        .into_iter()
        .chain((0..85).map(|i| format!("        let a{i} = {i};")))
        .chain(["    }".to_string()])
        .collect();
    let mut out = Vec::new();
    function_sizes("y.rs", &scoped, &mut out);
    assert_eq!(out.iter().map(|f| (f.place.as_str(), f.measure)).collect::<Vec<_>>(), [("y.rs::scoped", 87)]);

    // Every table has its writer, and the rule sees each way of writing one.
    let tables = entities();
    assert!(tables.len() >= 27, "the entities are read: {tables:?}");
    for (_, table) in &tables {
        let owner = WRITERS.iter().find(|(t, _)| t == table).map(|(_, m)| *m);
        let owner = owner.unwrap_or_else(|| panic!("WRITERS names no module for the table {table}"));
        assert!(root().join("store/src").join(owner).exists(), "{owner} (writer of {table}) exists");
    }
    let writes: Vec<String> = [
        "contact::Entity::insert(row)",
        "let row = thread::ActiveModel { id: Set(id) };",
        r#"let sql = "UPDATE step_executions SET state = 'cancelled'";"#,
        "// consent::Entity::insert in a comment is not a write",
        "consent::Entity::find()",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut out = Vec::new();
    foreign_writes("store/src/bulk.rs", &writes, &tables, &mut out);
    let seen: Vec<(&str, usize)> = out.iter().map(|f| (f.place.as_str(), f.measure)).collect();
    let expected = [
        ("store/src/bulk.rs::contacts", 1),
        ("store/src/bulk.rs::step_executions", 1),
        ("store/src/bulk.rs::threads", 1),
    ];
    assert_eq!(seen, expected);
    let mut out = Vec::new();
    foreign_writes("store/src/steps/claims.rs", &writes[2..3], &tables, &mut out);
    assert!(out.is_empty(), "steps/ writes step_executions: {out:?}");

    assert_eq!(
        expand("crate::store::{Store, status::{A, B as C}, self}"),
        ["crate::store::Store", "crate::store::status::A", "crate::store::status::B", "crate::store"]
    );
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["a".to_string(), "c".to_string()]));
    assert_eq!(cycles(&edges), vec![vec!["a".to_string(), "b".to_string()]]);
}
