//! Fuzzing the scenario format: any text, structured random documents and
//! mutated example files give a scenario or an error, never a panic.

use gang_sim::{Scenario, ScenarioError};
use gang_testkit::fuzz;
use proptest::prelude::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// Cases per property: a few seconds in a debug build.
const CASES: u32 = 1000;

/// Scenarios accepted so far (printed, to show the fuzzing reaches past
/// the syntax).
static ACCEPTED: AtomicU32 = AtomicU32::new(0);

/// Parses `text`; a refusal names the file, and its position (when given)
/// is inside the text.
fn exercise(text: &str) {
    match Scenario::parse("fuzz.toml", text) {
        Ok(s) => {
            ACCEPTED.fetch_add(1, Ordering::Relaxed);
            for d in &s.domains {
                assert!(d.vcpus >= 1, "{d:?}");
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz.toml"), "{msg}");
            if let Some(p) = e.pos() {
                assert!(p.line >= 1 && p.col >= 1, "{msg}");
                assert!(p.line <= text.lines().count().max(1) + 1, "{msg}");
            }
            assert!(!matches!(e, ScenarioError::Read { .. }), "{msg}");
        }
    }
}

fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        "\"[0-9]{1,6}(ns|us|ms|s|m|h)?\"",
        "\"[0-9a-z.,-]{0,8}\"",
        Just("\"18446744073709551615s\"".to_owned()),
        Just("\"0\"".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn policy() -> impl Strategy<Value = String> {
    prop_oneof![
        "\"(tt|et|be|no-mux)(,[0-9]{1,4}(ms|us|s)?){0,3}(@[0-9]{1,3}ms)?\"",
        "\"[a-z0-9,@]{0,12}\"",
    ]
}

fn cpus() -> impl Strategy<Value = String> {
    prop_oneof![
        "\"(0|0-1|0-3|all|1,2|3-0|\\^0|0-4095|0-99999999999|)\"",
        "\"[0-9,^ -]{0,10}\"",
        any::<u32>().prop_map(|n| n.to_string()),
    ]
}

fn small_int() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..6).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("300".to_owned()),
        Just("\"2\"".to_owned()),
        Just("1.5".to_owned()),
    ]
}

fn workload() -> impl Strategy<Value = String> {
    let fields = prop::collection::vec(
        prop_oneof![
            duration().prop_map(|d| format!("work = {d}")),
            duration().prop_map(|d| format!("period = {d}")),
            duration().prop_map(|d| format!("exec = {d}")),
            duration().prop_map(|d| format!("deadline = {d}")),
            duration().prop_map(|d| format!("offset = {d}")),
            duration().prop_map(|d| format!("run = {d}")),
            duration().prop_map(|d| format!("sleep = {d}")),
            small_int().prop_map(|n| format!("jitter = {n}")),
            Just("bogus = 1".to_owned()),
        ],
        0..4,
    );
    (
        "(busy|spin-barrier|blocking-barrier|periodic|sleep-wake|nope)",
        fields,
    )
        .prop_map(|(kind, f)| {
            let mut all = vec![format!("kind = \"{kind}\"")];
            all.extend(f);
            format!("{{ {} }}", all.join(", "))
        })
}

/// A key = value line of a table, `key` among the table's fields.
fn assignment(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    (
        prop::sample::select(keys),
        prop_oneof![
            duration(),
            policy(),
            cpus(),
            small_int(),
            workload(),
            "\\[[0-9, ]{0,8}\\]",
            "\\[\"(gang|host|linux|x)\"(, \"(gang|host)\")?\\]",
        ],
    )
        .prop_map(|(k, v)| format!("{k} = {v}"))
}

fn table() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(
            assignment(&["cpus", "grain", "be_slice", "be_reserve_pct", "x"]),
            0..4
        )
        .prop_map(|l| format!("[pool]\n{}", l.join("\n"))),
        prop::collection::vec(
            assignment(&["name", "vcpus", "policy", "cpus", "workload", "y"]),
            0..5
        )
        .prop_map(|l| format!("[[domain]]\n{}", l.join("\n"))),
        (
            0u32..40,
            prop::collection::vec(
                assignment(&["prefix", "vcpus", "seed", "reserved_cap_pct", "z"]),
                0..4
            ),
            prop::collection::vec(
                (1u32..4, policy(), workload()).prop_map(|(w, p, l)| format!(
                    "{{ weight = {w}, policy = {p}, workload = {l} }}"
                )),
                0..3
            ),
        )
            .prop_map(|(count, l, mix)| format!(
                "[[generate]]\ncount = {count}\n{}\nmix = [{}]",
                l.join("\n"),
                mix.join(", ")
            )),
    ]
}

fn document() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            assignment(&["name", "duration", "seed", "schedulers", "w"]),
            0..4,
        ),
        prop::collection::vec(table(), 0..5),
    )
        .prop_map(|(top, tables)| format!("{}\n{}", top.join("\n"), tables.join("\n")))
}

fn examples() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("examples directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            out.push(std::fs::read_to_string(&path).expect("example"));
        }
    }
    assert!(!out.is_empty());
    out
}

#[test]
fn arbitrary_text() {
    fuzz("arbitrary_text", CASES, "\\PC{0,200}", |t| exercise(&t));
}

#[test]
fn toml_alphabet() {
    let strategy = "[a-z0-9_ =\\[\\]{}\",.#\n-]{0,120}";
    fuzz("toml_alphabet", CASES, strategy, |t| exercise(&t));
}

#[test]
fn structured_documents() {
    fuzz("structured_documents", CASES, document(), |t| exercise(&t));
    println!(
        "scenarios accepted so far (all properties): {}",
        ACCEPTED.load(Ordering::Relaxed)
    );
}

#[test]
fn mutated_examples() {
    let files = examples();
    let n = files.len();
    let strategy = (
        0..n,
        prop::collection::vec(
            (any::<prop::sample::Index>(), 0usize..12, "\\PC{0,6}"),
            1..4,
        ),
    );
    fuzz("mutated_examples", CASES / 4, strategy, |(i, edits)| {
        let mut text = files[i].clone().into_bytes();
        for (at, cut, insert) in edits {
            let start = at.index(text.len() + 1);
            let end = (start + cut).min(text.len());
            text.splice(start..end, insert.into_bytes());
        }
        exercise(&String::from_utf8_lossy(&text));
    });
}

#[test]
fn examples_parse() {
    for text in examples() {
        Scenario::parse("example.toml", &text).expect("an example parses");
    }
}
