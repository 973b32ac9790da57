//! No input makes the parsers panic.

use gang_config::{Config, CpupoolConfig, DiskSpec, DomainConfig, VifSpec};
use gang_testkit::fuzz;
use proptest::prelude::*;

/// Runs every layer on `text`; only the absence of a panic is checked here,
/// plus that an error always displays with a location.
fn exercise(text: &str) {
    match Config::parse_with_overrides("f.cfg", text, &[text]) {
        Ok(cfg) => {
            let _ = DomainConfig::from_config(&cfg);
            let _ = CpupoolConfig::from_config(&cfg);
            for set in cfg.settings() {
                let _ = cfg.get_num(&set.key);
                let _ = cfg.get_str(&set.key);
                let _ = cfg.get_list(&set.key);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("f.cfg:") || msg.starts_with("command line:"),
                "{msg}"
            );
        }
    }
    let _ = DiskSpec::parse(text);
    let _ = VifSpec::parse(text);
}

proptest! {
    #[test]
    fn arbitrary_text(text in "\\PC*") {
        exercise(&text);
    }

    #[test]
    fn config_alphabet(text in "[a-zA-Z0-9 =+\\[\\],;#'\"\\\\\n\t:x_.-]{0,60}") {
        exercise(&text);
    }

    #[test]
    fn disk_alphabet(spec in "[a-z0-9:/,= -]{0,40}") {
        let _ = DiskSpec::parse(&spec);
    }
}

#[test]
fn garbage_corpus() {
    let corpus = [
        "",
        "=",
        "+=",
        "[",
        "]",
        "a=[",
        "a=['",
        "a='\\",
        "a='\\x",
        "a='\\0",
        "a=\"\\777\"",
        "a=0x",
        "a=0",
        "a=-",
        "a=[,]",
        "a=[1,]",
        "é=1",
        "a=\u{1F600}",
        "a = 'é\\xc3\\xa9'",
        "\n\n\n",
        ";;;",
        "#",
        "a=1#",
        "a=[\n#\n]",
        "target=",
        ",,,",
        "a:/",
        "cdrom",
        "phy:",
        "phy:/",
        "vdev=",
        "access=",
        "format=",
        "x=y=z",
        "hdc:cdrom",
    ];
    for text in corpus {
        exercise(text);
    }
    // A value that is valid everywhere still parses.
    assert!(Config::parse("f", "a=[1,]").is_ok());
}

// ---------------------------------------------------------------------------
// Structure-aware fuzzing: documents made of real keys with random values.
// ---------------------------------------------------------------------------

use gang_config::{ConfigError, CPUPOOL_KEYS, DOMAIN_KEYS, UNSUPPORTED_DOMAIN_KEYS};

/// Cases per structure-aware property: a few seconds in a debug build.
const CASES: u32 = 1000;

/// Checks that a domain or cpupool model error says where or what: a
/// `file:line`, or the parameter it is about.
fn assert_located(e: &ConfigError, file: &str) {
    let msg = e.to_string();
    let ok = match e {
        ConfigError::Syntax { .. } | ConfigError::Invalid { .. } => {
            msg.starts_with(&format!("{file}:")) || msg.starts_with("command line:")
        }
        ConfigError::Disk { .. } => msg.contains("disk specification"),
        ConfigError::MissingName | ConfigError::MissingPoolName => msg.contains("name"),
        ConfigError::InvalidType(_) => msg.contains("domain type"),
        ConfigError::InvalidAction { key, .. } => msg.contains(key.as_str()),
    };
    assert!(ok, "error names neither a location nor a key: {msg}");
    if let ConfigError::Invalid { key, .. } = e {
        assert!(msg.contains(key.as_str()), "{msg}");
    }
}

/// A scalar value in config syntax, often plausible for the keys.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..100).prop_map(|n| n.to_string()),
        "0x[0-9a-fA-F]{0,18}",
        "-?[0-9]{1,25}",
        "'[a-z0-9,:/=.@ _-]{0,20}'",
        "\"[a-z0-9,:/=.@ _\\\\-]{0,20}\"",
        "'(phy|file|tap|vdev|format|access|target|mac|bridge|ip|model|type)[:=][a-z0-9/,:=.-]{0,16}'",
        "'(0|1|0-1|all|0,1|3-1|\\^0|nodes:0|0-99999999999)'",
        "'(tt|et|be|no-mux)(,[0-9]{1,4}(ms|us|s)?){0,3}(@[0-9]ms)?'",
        "'(destroy|restart|preserve|rename-restart|coredump-destroy|pvh|hvm|pv|generic|qemu|bogus)'",
        "'\\\\(x[0-9a-f]{0,3}|[0-7]{0,4}|.)'",
        Just("''".to_owned()),
        Just("\"\\u00e9\"".to_owned()),
    ]
}

/// A value: a scalar or a (possibly nested, possibly malformed) list.
fn value() -> impl Strategy<Value = String> {
    let leaf = scalar();
    leaf.prop_recursive(3, 16, 5, |inner| {
        (
            prop::collection::vec(inner, 0..5),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(items, trailing_comma, newlines)| {
                let sep = if newlines { ",\n" } else { ", " };
                let mut s = format!("[{}", items.join(sep));
                if trailing_comma && !items.is_empty() {
                    s.push(',');
                }
                s.push(']');
                s
            })
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(DOMAIN_KEYS).prop_map(str::to_owned),
        2 => prop::sample::select(CPUPOOL_KEYS).prop_map(str::to_owned),
        2 => prop::sample::select(UNSUPPORTED_DOMAIN_KEYS).prop_map(str::to_owned),
        1 => "[a-zA-Z_][a-zA-Z0-9_.]{0,10}",
        1 => "[^\n=]{0,6}",
    ]
}

/// One line of a document: an assignment, a comment, a blank or junk.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => (key(), prop::sample::select(&["=", " = ", "+=", " += "][..]), value(),
               prop::sample::select(&["", ";", " # c", "  "][..]))
            .prop_map(|(k, op, v, tail)| format!("{k}{op}{v}{tail}")),
        1 => "#[^\n]{0,20}",
        1 => Just(String::new()),
        1 => "[^\n]{0,20}",
    ]
}

fn document() -> impl Strategy<Value = String> {
    prop::collection::vec(line(), 0..12).prop_map(|lines| lines.join("\n"))
}

/// Parses `doc` with `overrides`, then builds both models; nothing panics
/// and every error is located.
fn exercise_structured(doc: &str, overrides: &[String]) {
    let cfg = match Config::parse_with_overrides("fuzz.cfg", doc, overrides) {
        Ok(cfg) => cfg,
        Err(e) => {
            assert_located(&e, "fuzz.cfg");
            return;
        }
    };
    for set in cfg.settings() {
        assert!(!set.key.is_empty());
        assert!(set.line >= 1, "{set:?}");
    }
    if let Err(e) = DomainConfig::from_config(&cfg) {
        assert_located(&e, "fuzz.cfg");
    }
    if let Err(e) = CpupoolConfig::from_config(&cfg) {
        assert_located(&e, "fuzz.cfg");
    }
    for w in cfg.take_warnings() {
        assert!(w.line >= 1 || w.file == "fuzz.cfg", "{w:?}");
    }
    for key in ["disk", "vif"] {
        for item in cfg.get_list(key).unwrap_or_default() {
            if let Some(spec) = item.to_text() {
                let _ = DiskSpec::parse(&spec);
                if let Err(e) = VifSpec::parse(&spec) {
                    assert!(e.to_string().contains("vif specification"), "{e}");
                }
            }
        }
    }
}

#[test]
fn structured_documents() {
    fuzz("structured_documents", CASES, document(), |doc| {
        exercise_structured(&doc, &[]);
    });
}

#[test]
fn structured_documents_with_overrides() {
    let strategy = (document(), prop::collection::vec(line(), 0..3));
    fuzz(
        "structured_documents_with_overrides",
        CASES,
        strategy,
        |(doc, o)| {
            exercise_structured(&doc, &o);
        },
    );
}

#[test]
fn arbitrary_bytes_lossy() {
    let strategy = prop::collection::vec(any::<u8>(), 0..200);
    fuzz("arbitrary_bytes_lossy", CASES, strategy, |bytes| {
        exercise(&String::from_utf8_lossy(&bytes));
    });
}

#[test]
fn disk_specs() {
    let strategy = prop::collection::vec(
        prop_oneof![
            "(phy|file|tap|qcow2|raw|vhd|aio|tap2):[a-z/0-9.]{0,8}",
            "(vdev|format|access|target|devtype|backendtype|script)=[a-z0-9/,:]{0,8}",
            "(hd|xvd|sd)[a-z]{1,2}[0-9]{0,2}(:cdrom)?",
            "(r|w|rw|ro|cdrom|raw|qcow2)",
            "[^,]{0,6}",
        ],
        0..6,
    )
    .prop_map(|p| p.join(","));
    fuzz("disk_specs", CASES, strategy, |spec| {
        if let Err(e) = DiskSpec::parse(&spec) {
            assert!(e.to_string().contains("disk specification"), "{e}");
        }
    });
}

#[test]
fn vif_specs() {
    let strategy = prop::collection::vec(
        prop_oneof![
            "(mac|bridge|ip|model|type|vifname|script|backend|rate|gatewaydev)=[a-f0-9:./,]{0,18}",
            "mac=[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){0,6}",
            "[^,]{0,8}",
        ],
        0..5,
    )
    .prop_map(|p| p.join(","));
    fuzz("vif_specs", CASES, strategy, |spec| {
        if let Err(e) = VifSpec::parse(&spec) {
            let msg = e.to_string();
            assert!(
                msg.contains("vif specification") && msg.contains(&e.spec),
                "{msg}"
            );
        }
    });
}
