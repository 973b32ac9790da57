//! The xl.cfg syntax: every element, `+=`, last-wins, overrides, errors.

use gang_config::{Config, ConfigError, Value};

fn s(v: &str) -> Value {
    Value::Str(v.to_owned())
}

fn err(file: &str, text: &str) -> String {
    Config::parse(file, text)
        .expect_err("should not parse")
        .to_string()
}

#[test]
fn statements_comments_and_separators() {
    let cfg = Config::parse(
        "t.cfg",
        "# leading comment\n\nname = \"a\" # trailing comment\nmemory=256; vcpus = 2 ;\n  \t\nx.y_z9 = 'q'",
    )
    .unwrap();
    let keys: Vec<_> = cfg.settings().iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["name", "memory", "vcpus", "x.y_z9"]);
    assert_eq!(cfg.value("name"), Some(&s("a")));
    assert_eq!(cfg.value("memory"), Some(&Value::Num(256)));
    assert_eq!(cfg.value("vcpus"), Some(&Value::Num(2)));
    assert_eq!(cfg.value("x.y_z9"), Some(&s("q")));
    let lines: Vec<_> = cfg.settings().iter().map(|s| s.line).collect();
    assert_eq!(lines, [3, 4, 4, 6]);
    assert_eq!(cfg.get("name").unwrap().file, "t.cfg");
    assert_eq!(cfg.file(), "t.cfg");
}

#[test]
fn empty_and_comment_only_files() {
    assert!(Config::parse("t", "").unwrap().settings().is_empty());
    assert!(Config::parse("t", "# only\n;;\n")
        .unwrap()
        .settings()
        .is_empty());
}

#[test]
fn numbers_decimal_octal_hex() {
    let cfg = Config::parse("t", "a = 10\nb = 010\nc = 0x1f\nd = 0\ne = 0XFF").unwrap();
    assert_eq!(cfg.value("a"), Some(&Value::Num(10)));
    assert_eq!(cfg.value("b"), Some(&Value::Num(8)));
    assert_eq!(cfg.value("c"), Some(&Value::Num(31)));
    assert_eq!(cfg.value("d"), Some(&Value::Num(0)));
    assert_eq!(cfg.value("e"), Some(&Value::Num(255)));
}

#[test]
fn string_escapes() {
    let cfg = Config::parse(
        "t",
        r#"a = "x\ny\tz\\\"\'"
b = 'single \'q\' "dq"'
c = "\x41\101\0101\x7e"
d = "\$"
e = ''"#,
    )
    .unwrap();
    assert_eq!(cfg.value("a"), Some(&s("x\ny\tz\\\"'")));
    assert_eq!(cfg.value("b"), Some(&s("single 'q' \"dq\"")));
    // \0101 is octal 010 then '1'.
    assert_eq!(cfg.value("c"), Some(&s("AA\u{8}1~")));
    assert_eq!(cfg.value("d"), Some(&s("$")));
    assert_eq!(cfg.value("e"), Some(&s("")));
}

#[test]
fn lists_multiline_trailing_comma_comments() {
    let cfg = Config::parse(
        "t",
        "disk = [ 'a',\n  'b', # second\n\n  3,\n]\nempty = []\none=[ 'x' ]\nvcpus = 1",
    )
    .unwrap();
    assert_eq!(
        cfg.value("disk"),
        Some(&Value::List(vec![s("a"), s("b"), Value::Num(3)]))
    );
    assert_eq!(cfg.value("empty"), Some(&Value::List(vec![])));
    assert_eq!(cfg.value("one"), Some(&Value::List(vec![s("x")])));
    assert_eq!(cfg.get("vcpus").unwrap().line, 8);
}

#[test]
fn last_assignment_wins_and_keeps_first_position_and_last_line() {
    let cfg = Config::parse("t", "a = 1\nb = 2\na = 'three'\n").unwrap();
    let keys: Vec<_> = cfg.settings().iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(cfg.value("a"), Some(&s("three")));
    assert_eq!(cfg.get("a").unwrap().line, 3);
}

#[test]
fn append_strings_and_lists() {
    let cfg = Config::parse(
        "t",
        "extra = 'a'\nextra += ' b'\ndisk = ['x']\ndisk += ['y', 'z']\nnew += 'n'\nl += [1]",
    )
    .unwrap();
    assert_eq!(cfg.value("extra"), Some(&s("a b")));
    assert_eq!(cfg.get("extra").unwrap().line, 2);
    assert_eq!(
        cfg.value("disk"),
        Some(&Value::List(vec![s("x"), s("y"), s("z")]))
    );
    assert_eq!(cfg.value("new"), Some(&s("n")));
    assert_eq!(cfg.value("l"), Some(&Value::List(vec![Value::Num(1)])));
}

#[test]
fn append_errors() {
    assert_eq!(
        err("t.cfg", "a = 'x'\na += ['y']"),
        "t.cfg:2: config parsing error near `a': can't use += to mix a list and a single value"
    );
    assert_eq!(
        err("t.cfg", "a = 1\na += 'y'"),
        "t.cfg:2: config parsing error near `a': can't use += with numbers"
    );
    assert_eq!(
        err("t.cfg", "a += 2"),
        "t.cfg:1: config parsing error near `a': can't use += with numbers"
    );
}

#[test]
fn syntax_errors_have_xl_format() {
    let cases: &[(&str, &str)] = &[
        ("Name = 'x'", "t.cfg:1: config parsing error near `Name': invalid parameter name (names match [a-z][._0-9a-z]*)"),
        ("a = 'x'\nname 'x'", "t.cfg:2: config parsing error near `'x'': expected `=' or `+='"),
        ("a =\n", "t.cfg:1: config parsing error near `\\n': expected a value (a string or a number)"),
        ("a = ", "t.cfg:1: config parsing error near end of file: expected a value (a string or a number)"),
        ("a = bare", "t.cfg:1: config parsing error near `bare': expected a value (a string or a number)"),
        ("a = 'x' 'y'", "t.cfg:1: config parsing error near `'y'': expected a newline or `;'"),
        ("\n\na = 'abc", "t.cfg:3: config parsing error near `'abc': unterminated string"),
        ("a = \"ab\ncd\"", "t.cfg:1: config parsing error near `\"ab': unterminated string"),
        ("a = '\\q'", "t.cfg:1: config parsing error near `\\q': invalid escape sequence"),
        ("a = '\\xZZ'", "t.cfg:1: config parsing error near `\\x': invalid escape sequence"),
        ("a = '\\777'", "t.cfg:1: config parsing error near `\\777': invalid escape sequence"),
        ("a = '\\0'", "t.cfg:1: config parsing error near `'\\0'': NUL character in string"),
        ("a = '\\xff'", "t.cfg:1: config parsing error near `'\\xff'': string is not valid UTF-8"),
        ("a = 09", "t.cfg:1: config parsing error near `09': invalid number"),
        ("a = 12ab", "t.cfg:1: config parsing error near `12ab': invalid number"),
        ("a = 99999999999999999999", "t.cfg:1: config parsing error near `99999999999999999999': invalid number"),
        ("a = -1", "t.cfg:1: config parsing error near `-': invalid character"),
        ("a = [1\n2]", "t.cfg:2: config parsing error near `2': expected `,' or `]'"),
        ("a = [1,,2]", "t.cfg:1: config parsing error near `,': expected a value (a string or a number)"),
        ("a = [[1]]", "t.cfg:1: config parsing error near `[': expected a value (a string or a number)"),
        ("a = [1,\n", "t.cfg:2: config parsing error near end of file: expected a value (a string or a number)"),
        ("= 1", "t.cfg:1: config parsing error near `=': expected a parameter name"),
        ("a = 1 +", "t.cfg:1: config parsing error near `+': invalid character"),
    ];
    for (text, want) in cases {
        let e = Config::parse("t.cfg", text).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{text:?}");
        assert_eq!(e.to_string(), *want, "input {text:?}");
    }
}

#[test]
fn overrides_win_and_report_command_line() {
    let cfg = Config::parse_with_overrides(
        "vm.cfg",
        "name = 'file'\nmemory = 256\nextra = 'a'",
        &["memory=512", "name=\"x\"", "extra += ' b'", "vcpus=4"],
    )
    .unwrap();
    assert_eq!(cfg.value("memory"), Some(&Value::Num(512)));
    assert_eq!(cfg.value("name"), Some(&s("x")));
    assert_eq!(cfg.value("extra"), Some(&s("a b")));
    assert_eq!(cfg.value("vcpus"), Some(&Value::Num(4)));
    let name = cfg.get("name").unwrap();
    assert_eq!((name.file.as_str(), name.line), ("command line", 2));
    let keys: Vec<_> = cfg.settings().iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["name", "memory", "extra", "vcpus"]);

    let e =
        Config::parse_with_overrides("vm.cfg", "name='a'", &["memory=512", "name=x"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "command line:2: config parsing error near `x': expected a value (a string or a number)"
    );
    // Each override stands alone: an unterminated list does not swallow the next.
    let e = Config::parse_with_overrides("vm.cfg", "", &["a=[1,", "b=2"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "command line:1: config parsing error near end of file: expected a value (a string or a number)"
    );
    // Errors in the file are still reported against the file.
    let e = Config::parse_with_overrides("vm.cfg", "a = ", &["b=1"]).unwrap_err();
    assert!(e.to_string().starts_with("vm.cfg:1: "), "{e}");
}

#[test]
fn typed_accessors_and_warnings() {
    let cfg = Config::parse(
        "t.cfg",
        "s = 'txt'\nn = 7\nns = '0x10'\nl = ['a', 2]\nbad = '12M'\nbig = '99999999999999999999'",
    )
    .unwrap();
    assert_eq!(cfg.get_str("s").as_deref(), Some("txt"));
    assert_eq!(cfg.get_str("n").as_deref(), Some("7"));
    assert_eq!(cfg.get_num("n"), Some(7));
    assert_eq!(cfg.get_num("ns"), Some(16));
    assert_eq!(cfg.get_list("l").map(<[Value]>::len), Some(2));
    assert_eq!(
        cfg.get_string_list("l"),
        Some(vec!["a".to_owned(), "2".to_owned()])
    );
    assert_eq!(cfg.get_str("missing"), None);
    assert_eq!(cfg.get_num("missing"), None);
    assert_eq!(cfg.get_list("missing"), None);
    assert!(cfg.warnings().is_empty(), "absent keys do not warn");

    assert_eq!(cfg.get_str("l"), None);
    assert_eq!(cfg.get_num("l"), None);
    assert_eq!(cfg.get_num("s"), None);
    assert_eq!(cfg.get_num("bad"), None);
    assert_eq!(cfg.get_num("big"), None);
    assert_eq!(cfg.get_list("s"), None);
    let w: Vec<String> = cfg
        .take_warnings()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        w,
        [
            "t.cfg:4: warning: parameter `l' is a list but should be a single value",
            "t.cfg:4: warning: parameter `l' is a list but should be a single value",
            "t.cfg:1: warning: parameter `s' is not a valid number",
            "t.cfg:5: warning: parameter `bad' is not a valid number",
            "t.cfg:6: warning: parameter `big' could not be parsed as a number: Numerical result out of range",
            "t.cfg:1: warning: parameter `s' is a single value but should be a list",
        ]
    );
    assert!(cfg.warnings().is_empty());
}

#[test]
fn value_display_round_trips() {
    let cfg = Config::parse("t", "a = ['x\"y\\\\z\\n', 5, '\\x01']").unwrap();
    let v = cfg.value("a").unwrap();
    let again = Config::parse("t", &format!("a = {v}")).unwrap();
    assert_eq!(again.value("a"), Some(v));
    assert_eq!(v.to_string(), "[\"x\\\"y\\\\z\\n\", 5, \"\\x01\"]");
}
