//! The loader never panics, whatever the input; versions follow content.

use std::path::Path;

use kairo_store::store_test;
use kairo_workflow::{self as workflow, Catalog};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../workflows/abandoned-cart.yaml");

fn catalog() -> Catalog {
    serde_json::from_str(include_str!("../../fixtures/catalog.json")).expect("catalog parses")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = workflow::check(Path::new("fuzz.yaml"), &text, Some(&catalog()));
    }

    #[test]
    fn mutated_examples_never_panic(cut in 0..EXAMPLE.len(), insert in "[ -~\\n]{0,12}", keep in 0..EXAMPLE.len()) {
        // Splice random text into a real workflow, keeping it UTF-8.
        let cut = (0..=cut).rev().find(|i| EXAMPLE.is_char_boundary(*i)).unwrap_or(0);
        let keep = (keep..=EXAMPLE.len()).find(|i| EXAMPLE.is_char_boundary(*i)).unwrap_or(EXAMPLE.len()).max(cut);
        let text = format!("{}{}{}", &EXAMPLE[..cut], insert, &EXAMPLE[keep..]);
        let _ = workflow::check(Path::new("fuzz.yaml"), &text, Some(&catalog()));
    }

    #[test]
    fn conditions_never_panic(text in "[a-z._ =<>!()\"0-9]{0,40}") {
        if let Ok(condition) = workflow::condition::Condition::parse(&text) {
            let _ = condition.evaluate(&serde_json::json!({"contact": {"a": 1}}));
        }
    }
}

#[test]
fn comments_and_whitespace_do_not_change_the_content_hash() {
    let reformatted =
        format!("# a new comment\n\n{}\n\n", EXAMPLE.replace("  - id: done", "  # the end\n  - id:    done"));
    let a = workflow::check(Path::new("a.yaml"), EXAMPLE, None).expect("valid");
    let b = workflow::check(Path::new("b.yaml"), &reformatted, None).expect("valid");
    assert_eq!(a.content_hash, b.content_hash);
    let changed = EXAMPLE.replace("for: 1h", "for: 2h");
    let c = workflow::check(Path::new("a.yaml"), &changed, None).expect("valid");
    assert_ne!(a.content_hash, c.content_hash);
}

store_test!(a_changed_file_becomes_a_new_version, |store| {
    let now = chrono::Utc::now();
    let v1 = workflow::check(Path::new("cart.yaml"), EXAMPLE, None).expect("valid");
    let first = kairo_engine::registry::register_workflow(&store, &v1, now).await.expect("register");
    assert!(first.created);
    assert_eq!(first.version.version, 1);
    assert_eq!(first.version.source, EXAMPLE);
    let same =
        workflow::check(Path::new("cart.yaml"), &format!("{EXAMPLE}\n# trailing comment\n"), None).expect("valid");
    assert!(!kairo_engine::registry::register_workflow(&store, &same, now).await.expect("again").created);
    let v2 = workflow::check(Path::new("cart.yaml"), &EXAMPLE.replace("for: 1h", "for: 2h"), None).expect("valid");
    let second = kairo_engine::registry::register_workflow(&store, &v2, now).await.expect("v2");
    assert!(second.created);
    assert_eq!(second.version.version, 2);
    assert_eq!(second.workflow.id, first.workflow.id);
    assert_eq!(second.workflow.current_version_id, Some(second.version.id));
    // The stored definition is the canonical content, positions left out.
    assert_eq!(second.version.definition["steps"][0]["wait"]["for"], serde_json::json!("2h"));
});

store_test!(an_invalid_file_is_not_loaded_and_the_previous_version_stays, |store| {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cart.yaml");
    std::fs::write(&file, EXAMPLE).expect("write");
    let now = chrono::Utc::now();
    let first = kairo_engine::registry::load_workflows(&store, dir.path(), None, now).await.expect("load");
    assert_eq!(first.new_versions.len(), 1, "{:?}", first.rejected);
    let v1 = first.new_versions[0].version.id;
    std::fs::write(&file, EXAMPLE.replace("for: 1h", "for: an hour")).expect("break it");
    let second = kairo_engine::registry::load_workflows(&store, dir.path(), None, now).await.expect("load again");
    assert!(second.new_versions.is_empty());
    assert_eq!(second.rejected.len(), 1);
    assert!(
        second.rejected[0].1[0].to_string().contains("cart.yaml:22:12: invalid duration `an hour`"),
        "{:?}",
        second.rejected
    );
    let current = store.workflow_by_key("abandoned-cart").await.expect("find").expect("still there");
    assert_eq!(current.current_version_id, Some(v1));
});

store_test!(every_example_workflow_loads, |store| {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../workflows"));
    let report =
        kairo_engine::registry::load_workflows(&store, dir, Some(&catalog()), chrono::Utc::now()).await.expect("load");
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert!(report.new_versions.len() >= 6);
    let again = kairo_engine::registry::load_workflows(&store, dir, Some(&catalog()), chrono::Utc::now())
        .await
        .expect("reload");
    assert!(again.new_versions.is_empty());
    assert_eq!(again.unchanged.len(), report.new_versions.len());
});
