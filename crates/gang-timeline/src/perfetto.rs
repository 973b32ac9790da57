//! Perfetto's own trace format (protobuf `perfetto.protos.Trace`), which
//! ui.perfetto.dev and `trace_processor` open natively, for traces too large
//! for JSON.
//!
//! Layout: one packet sequence (`trusted_packet_sequence_id` 1, its first
//! packet marks the incremental state cleared). Each group is a track named
//! `pool P on host H (grain G)`, each of its CPUs a child track `CPU N`
//! (track descriptors; uuids `(group + 1) << 32` and that plus CPU id plus
//! one). A slot is a `TYPE_SLICE_BEGIN` at its real start and a
//! `TYPE_SLICE_END` at its end on its CPU's track, named `DOMAIN vN`, with
//! debug annotations `domid`, `vcpu`, `planned_ns`, `late_ns`; an instant
//! is a `TYPE_INSTANT` on its CPU's track or the group's, named by its kind,
//! its text as annotation `text`. A `timeline` instant at the window's
//! start on each group's track carries the metadata (host, pool, clock,
//! grain, window and the extra pairs) as annotations. Timestamps are the
//! timeline's nanoseconds (the viewer shows them as its default clock).
//!
//! Field numbers are those of Perfetto's protos (`trace.proto`,
//! `trace_packet.proto`, `track_event/track_event.proto`,
//! `track_descriptor.proto`, `debug_annotation.proto`), stable by the
//! protobuf contract. Invariant: as for Chrome files, [`write`] checks the
//! timeline first, and within a track every end comes before a begin at
//! the same instant, so slices never overlap.

use crate::{Timeline, TimelineError};

/// `Trace.packet`.
const TRACE_PACKET: u32 = 1;
/// `TracePacket.timestamp`.
const PACKET_TIMESTAMP: u32 = 8;
/// `TracePacket.trusted_packet_sequence_id`.
const PACKET_SEQUENCE_ID: u32 = 10;
/// `TracePacket.track_event`.
const PACKET_TRACK_EVENT: u32 = 11;
/// `TracePacket.sequence_flags`.
const PACKET_SEQUENCE_FLAGS: u32 = 13;
/// `TracePacket.track_descriptor`.
const PACKET_TRACK_DESCRIPTOR: u32 = 60;
/// `SequenceFlags.SEQ_INCREMENTAL_STATE_CLEARED`.
const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
/// `TrackDescriptor.uuid`, `.name`, `.parent_uuid`.
const TRACK_UUID: u32 = 1;
const TRACK_NAME: u32 = 2;
const TRACK_PARENT_UUID: u32 = 5;
/// `TrackEvent.debug_annotations`, `.type`, `.track_uuid`, `.categories`,
/// `.name`.
const EVENT_ANNOTATIONS: u32 = 4;
const EVENT_TYPE: u32 = 9;
const EVENT_TRACK_UUID: u32 = 11;
const EVENT_CATEGORIES: u32 = 22;
const EVENT_NAME: u32 = 23;
/// `TrackEvent.Type`.
const TYPE_SLICE_BEGIN: u64 = 1;
const TYPE_SLICE_END: u64 = 2;
const TYPE_INSTANT: u64 = 3;
/// `DebugAnnotation.uint_value`, `.string_value`, `.name`.
const ANNOTATION_UINT: u32 = 3;
const ANNOTATION_STRING: u32 = 6;
const ANNOTATION_NAME: u32 = 10;

/// A protobuf message being written.
#[derive(Debug, Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    fn uint(&mut self, field: u32, v: u64) {
        self.key(field, 0);
        self.varint(v);
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    fn message(&mut self, field: u32, m: &Message) {
        self.bytes(field, &m.0);
    }
}

/// A value of a debug annotation.
#[derive(Debug, Clone)]
enum Value {
    Uint(u64),
    Text(String),
}

fn annotation(name: &str, value: &Value) -> Message {
    let mut a = Message::default();
    a.string(ANNOTATION_NAME, name);
    match value {
        Value::Uint(v) => a.uint(ANNOTATION_UINT, *v),
        Value::Text(s) => a.string(ANNOTATION_STRING, s),
    }
    a
}

/// One track event before encoding; sorted by (time, order) so that an
/// end precedes a begin at the same instant on a track.
#[derive(Debug, Clone)]
struct Event {
    at: u64,
    order: u8,
    kind: u64,
    track: u64,
    name: String,
    category: &'static str,
    args: Vec<(&'static str, Value)>,
}

fn packet(out: &mut Message, at: Option<u64>, body_field: u32, body: &Message, first: bool) {
    let mut p = Message::default();
    if let Some(t) = at {
        p.uint(PACKET_TIMESTAMP, t);
    }
    p.uint(PACKET_SEQUENCE_ID, 1);
    if first {
        p.uint(PACKET_SEQUENCE_FLAGS, SEQ_INCREMENTAL_STATE_CLEARED);
    }
    p.message(body_field, body);
    out.message(TRACE_PACKET, &p);
}

/// The uuid of group `g`'s track and of its CPU `cpu`'s.
pub fn track_uuids(g: usize, cpu: Option<u32>) -> u64 {
    let base = (g as u64 + 1) << 32;
    cpu.map_or(base, |c| base + u64::from(c) + 1)
}

/// The Perfetto trace of `t`.
pub fn write(t: &Timeline) -> Result<Vec<u8>, TimelineError> {
    t.check()?;
    let m = &t.meta;
    let mut out = Message::default();
    let mut first = true;
    let mut events = Vec::new();
    for (g, group) in t.groups.iter().enumerate() {
        let mut d = Message::default();
        d.uint(TRACK_UUID, track_uuids(g, None));
        let host = m.host.as_deref().unwrap_or("(simulated)");
        d.string(
            TRACK_NAME,
            &format!(
                "{} on host {host} (grain {})",
                group.name,
                gang_core::time::Duration(m.grain_ns)
            ),
        );
        packet(&mut out, None, PACKET_TRACK_DESCRIPTOR, &d, first);
        first = false;
        for &cpu in &group.cpus {
            let mut d = Message::default();
            d.uint(TRACK_UUID, track_uuids(g, Some(cpu)));
            d.uint(TRACK_PARENT_UUID, track_uuids(g, None));
            d.string(TRACK_NAME, &format!("CPU {cpu}"));
            packet(&mut out, None, PACKET_TRACK_DESCRIPTOR, &d, false);
        }
        let mut meta: Vec<(&'static str, Value)> = vec![
            ("title", Value::Text(m.title.clone())),
            ("host", Value::Text(host.to_string())),
            ("pool", Value::Text(m.pool.clone())),
            ("clock", Value::Text(m.clock.clone())),
            ("grain_ns", Value::Uint(m.grain_ns)),
            ("window_start_ns", Value::Uint(m.window.0)),
            ("window_end_ns", Value::Uint(m.window.1)),
        ];
        if let Some(c) = m.cycle_ns {
            meta.push(("cycle_ns", Value::Uint(c)));
        }
        let extra: Vec<String> = m.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !extra.is_empty() {
            meta.push(("extra", Value::Text(extra.join(" "))));
        }
        events.push(Event {
            at: m.window.0,
            order: 2,
            kind: TYPE_INSTANT,
            track: track_uuids(g, None),
            name: "timeline".into(),
            category: "meta",
            args: meta,
        });
        // A slot of no length (its switch later than its end) has nothing
        // to show, and its end would sort before its begin.
        for s in t
            .clipped(group)
            .into_iter()
            .filter(|s| s.real_start() < s.end)
        {
            let name = t
                .domain_index(s.domain)
                .map_or("?", |d| t.domains[d].name.as_str());
            let label = match s.vcpu {
                Some(v) => format!("{name} v{v}"),
                None => name.to_string(),
            };
            let track = track_uuids(g, Some(s.cpu));
            let mut args = vec![
                ("domid", Value::Uint(u64::from(s.domain))),
                ("planned_ns", Value::Uint(s.start)),
                ("late_ns", Value::Uint(s.late)),
            ];
            if let Some(v) = s.vcpu {
                args.push(("vcpu", Value::Uint(u64::from(v))));
            }
            events.push(Event {
                at: s.real_start(),
                order: 1,
                kind: TYPE_SLICE_BEGIN,
                track,
                name: label,
                category: "slot",
                args,
            });
            events.push(Event {
                at: s.end,
                order: 0,
                kind: TYPE_SLICE_END,
                track,
                name: String::new(),
                category: "slot",
                args: Vec::new(),
            });
        }
        for i in t.instants_in(group) {
            events.push(Event {
                at: i.at,
                order: 2,
                kind: TYPE_INSTANT,
                track: track_uuids(g, i.cpu),
                name: i.kind.as_str().to_string(),
                category: i.kind.as_str(),
                args: vec![("text", Value::Text(i.text.clone()))],
            });
        }
    }
    events.sort_by_key(|e| (e.at, e.order));
    for e in &events {
        let mut te = Message::default();
        te.uint(EVENT_TYPE, e.kind);
        te.uint(EVENT_TRACK_UUID, e.track);
        if e.kind != TYPE_SLICE_END {
            te.string(EVENT_CATEGORIES, e.category);
            te.string(EVENT_NAME, &e.name);
        }
        for (k, v) in &e.args {
            te.message(EVENT_ANNOTATIONS, &annotation(k, v));
        }
        packet(&mut out, Some(e.at), PACKET_TRACK_EVENT, &te, first);
        first = false;
    }
    Ok(out.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample;
    use std::collections::BTreeMap;

    /// A protobuf field as read back: number and value.
    #[derive(Debug, Clone)]
    enum Field {
        Int(u64),
        Bytes(Vec<u8>),
    }

    /// Decodes one message's fields (wire types 0 and 2 only: all we
    /// write).
    fn fields(mut b: &[u8]) -> Vec<(u32, Field)> {
        fn varint(b: &mut &[u8]) -> u64 {
            let mut v = 0;
            let mut shift = 0;
            loop {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return v;
                }
                shift += 7;
            }
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b);
            let (field, wire) = ((key >> 3) as u32, key & 7);
            match wire {
                0 => out.push((field, Field::Int(varint(&mut b)))),
                2 => {
                    let n = varint(&mut b) as usize;
                    out.push((field, Field::Bytes(b[..n].to_vec())));
                    b = &b[n..];
                }
                w => panic!("wire type {w}"),
            }
        }
        out
    }

    fn int(fs: &[(u32, Field)], n: u32) -> Option<u64> {
        fs.iter().find_map(|(f, v)| match v {
            Field::Int(i) if *f == n => Some(*i),
            _ => None,
        })
    }

    fn bytes(fs: &[(u32, Field)], n: u32) -> Option<Vec<u8>> {
        fs.iter().find_map(|(f, v)| match v {
            Field::Bytes(b) if *f == n => Some(b.clone()),
            _ => None,
        })
    }

    fn text(fs: &[(u32, Field)], n: u32) -> Option<String> {
        bytes(fs, n).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn varints_encode_as_protobuf_does() {
        let mut m = Message::default();
        m.uint(1, 300);
        assert_eq!(m.0, [0x08, 0xac, 0x02]);
        let mut m = Message::default();
        m.string(2, "hi");
        assert_eq!(m.0, [0x12, 2, b'h', b'i']);
    }

    #[test]
    fn tracks_slices_and_instants_read_back_without_overlap() {
        let t = sample();
        let bytes_out = write(&t).unwrap();
        assert_eq!(write(&t).unwrap(), bytes_out, "deterministic");
        let packets: Vec<Vec<(u32, Field)>> = fields(&bytes_out)
            .into_iter()
            .map(|(f, v)| {
                assert_eq!(f, TRACE_PACKET);
                let Field::Bytes(b) = v else { panic!() };
                fields(&b)
            })
            .collect();
        assert_eq!(int(&packets[0], PACKET_SEQUENCE_FLAGS), Some(1));
        assert!(packets
            .iter()
            .all(|p| int(p, PACKET_SEQUENCE_ID) == Some(1)));
        let mut tracks = BTreeMap::new();
        let mut open: BTreeMap<u64, u64> = BTreeMap::new();
        let (mut slices, mut instants, mut last) = (0, Vec::new(), 0);
        for p in &packets {
            if let Some(d) = bytes(p, PACKET_TRACK_DESCRIPTOR) {
                let d = fields(&d);
                tracks.insert(
                    int(&d, TRACK_UUID).unwrap(),
                    (text(&d, TRACK_NAME).unwrap(), int(&d, TRACK_PARENT_UUID)),
                );
                continue;
            }
            let at = int(p, PACKET_TIMESTAMP).unwrap();
            assert!(at >= last, "events in time order");
            last = at;
            let e = fields(&bytes(p, PACKET_TRACK_EVENT).unwrap());
            let track = int(&e, EVENT_TRACK_UUID).unwrap();
            assert!(
                tracks.contains_key(&track),
                "an event on an undeclared track"
            );
            match int(&e, EVENT_TYPE).unwrap() {
                TYPE_SLICE_BEGIN => {
                    assert!(open.insert(track, at).is_none(), "overlap on {track}");
                    assert!(text(&e, EVENT_NAME).unwrap().contains(" v"));
                    slices += 1;
                }
                TYPE_SLICE_END => {
                    let begun = open.remove(&track).expect("an end without a begin");
                    assert!(begun <= at);
                }
                TYPE_INSTANT => {
                    let name = text(&e, EVENT_NAME).unwrap();
                    let notes: Vec<String> = e
                        .iter()
                        .filter(|(f, _)| *f == EVENT_ANNOTATIONS)
                        .map(|(_, v)| {
                            let Field::Bytes(b) = v else { panic!() };
                            text(&fields(b), ANNOTATION_NAME).unwrap()
                        })
                        .collect();
                    instants.push((name, notes));
                }
                other => panic!("type {other}"),
            }
        }
        assert!(open.is_empty(), "every slice ended");
        assert_eq!(slices, 12);
        assert_eq!(tracks.len(), 3);
        assert_eq!(tracks[&track_uuids(0, Some(3))].0, "CPU 3");
        assert_eq!(
            tracks[&track_uuids(0, Some(3))].1,
            Some(track_uuids(0, None))
        );
        assert!(tracks[&track_uuids(0, None)]
            .0
            .contains("host h1 (grain 1ms)"));
        let names: Vec<&str> = instants.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["timeline", "pause", "late-switch"]);
        for key in [
            "host",
            "pool",
            "clock",
            "grain_ns",
            "window_end_ns",
            "extra",
        ] {
            assert!(instants[0].1.iter().any(|k| k == key), "no {key}");
        }
    }
}
