//! No input makes the parsers panic.

use gang_config::{Config, CpupoolConfig, DiskSpec, DomainConfig, VifSpec};
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
