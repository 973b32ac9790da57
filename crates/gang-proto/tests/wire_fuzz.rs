//! Fuzzing the wire: whatever a client writes, the server loop answers each
//! line once, in order, with a well-formed response (an error for anything
//! that is not a request), and never panics.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use gang_proto::{
    parse_request, serve, ApiError, ErrorCode, RequestBody, Response, ResponseBody, MAX_LINE,
    VERSION,
};
use gang_testkit::api::{FIELDS, OPS};
use gang_testkit::fuzz;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Cases per property: a few seconds in a debug build.
const CASES: u32 = 1000;

/// The test handler: `ListPools` fails (so handler errors travel too),
/// everything else is done.
fn handler(body: RequestBody) -> Result<ResponseBody, ApiError> {
    match body {
        RequestBody::ListPools => Err(ApiError::new(ErrorCode::Refused, "no pools today")),
        _ => Ok(ResponseBody::Done),
    }
}

/// Writes `bytes` to a server loop on a socket pair, closes the sending
/// side and returns the response lines and what `serve` returned.
fn converse(bytes: Vec<u8>) -> (Vec<String>, std::io::Result<()>) {
    let (client, server_end) = UnixStream::pair().expect("socket pair");
    let server = std::thread::spawn(move || serve(server_end, handler));
    let mut writer = client.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        // The server may close early (an oversized line): a broken pipe is
        // then expected.
        let _ = writer.write_all(&bytes);
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut lines = Vec::new();
    for line in BufReader::new(client).lines() {
        lines.push(line.expect("the server writes UTF-8 lines"));
    }
    sender.join().expect("sender");
    let served = server.join().expect("the server loop does not panic");
    (lines, served)
}

/// The lines `serve` reads from `bytes`: newline-terminated, plus a
/// non-empty unterminated tail.
fn split(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    if out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out
}

/// Sends `bytes` (no line longer than `MAX_LINE`) and checks one answer per
/// line, each what `parse_request` and the handler say it should be.
fn check_wire(bytes: Vec<u8>) {
    let sent = split(&bytes).iter().map(|l| l.to_vec()).collect::<Vec<_>>();
    let (answers, served) = converse(bytes);
    served.expect("the loop ends cleanly at the end of the stream");
    assert_eq!(answers.len(), sent.len(), "one answer per line");
    for (line, answer) in sent.iter().zip(&answers) {
        let r: Response = serde_json::from_str(answer).expect("a well-formed response");
        assert_eq!(r.version, VERSION);
        let Ok(text) = std::str::from_utf8(line) else {
            let e = r.result.expect_err("invalid UTF-8 is refused");
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert_eq!(r.id, 0);
            continue;
        };
        match parse_request(text.trim_end()) {
            Ok(req) => {
                assert_eq!(r.id, req.id);
                assert_eq!(r.result, handler(req.body));
            }
            Err((id, e)) => {
                assert_eq!(r.id, id);
                assert_eq!(r.result, Err(e));
            }
        }
    }
}

/// Any JSON value, small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        "(Pool-0|0|1|gang|host|credit|0-1|all|tt,10ms,1ms|be,256)".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request-shaped object: a version (usually right), an id (usually a
/// number), an op and fields of the request set with any values.
fn request_like() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            6 => Just(json!(VERSION)),
            1 => json_value(),
            1 => any::<u32>().prop_map(|v| json!(v)),
        ],
        prop::option::weighted(
            0.9,
            prop_oneof![any::<u64>().prop_map(|i| json!(i)), json_value()],
        ),
        prop::option::weighted(0.95, prop::sample::select(OPS)),
        prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..4),
        any::<bool>(),
    )
        .prop_map(|(version, id, op, fields, with_version)| {
            let mut m = Map::new();
            if with_version {
                m.insert("version".into(), version);
            }
            if let Some(id) = id {
                m.insert("id".into(), id);
            }
            if let Some(op) = op {
                m.insert("op".into(), json!(op));
            }
            for (k, v) in fields {
                m.insert(k.to_owned(), v);
            }
            Value::Object(m)
        })
}

/// A line: a request-like object, any JSON, or raw text/bytes.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        5 => request_like().prop_map(|v| v.to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => "\\PC{0,30}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..30),
    ]
}

#[test]
fn arbitrary_bytes() {
    let strategy = prop::collection::vec(any::<u8>(), 0..400);
    fuzz("arbitrary_bytes", CASES, strategy, check_wire);
}

#[test]
fn arbitrary_lines() {
    let strategy =
        (prop::collection::vec(line(), 0..8), any::<bool>()).prop_map(|(lines, terminated)| {
            let mut bytes = lines.join(&b'\n');
            if terminated {
                bytes.push(b'\n');
            }
            bytes
        });
    fuzz("arbitrary_lines", CASES, strategy, check_wire);
}

#[test]
fn an_oversized_line_is_answered_then_the_connection_closes() {
    let mut bytes = b"{\"version\":1,\"id\":1,\"op\":\"info\"}\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
    bytes.extend(b"\n{\"version\":1,\"id\":2,\"op\":\"info\"}\n");
    let (answers, served) = converse(bytes);
    served.expect("a clean end");
    assert_eq!(answers.len(), 2, "{answers:?}");
    let r: Response = serde_json::from_str(&answers[1]).expect("response");
    assert_eq!(r.result.expect_err("refused").code, ErrorCode::BadRequest);
}
