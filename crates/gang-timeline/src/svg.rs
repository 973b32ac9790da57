//! SVG timelines (moved here from the simulator, which draws through this
//! module as the live runtime does).
//!
//! One block per [`Group`](crate::Group); in it one lane per CPU, with a
//! rectangle for every slot (back-to-back slots of one domain on one CPU
//! drawn as one), coloured by domain, its tooltip the domain, vCPU and
//! times. Instants are vertical ticks: gang decisions thin and grey across
//! the block, the others coloured by kind, across the block or their CPU's
//! lane, with their text as tooltip. A time axis runs along each block; a
//! legend names the domains and the kinds of instants that appear. Only
//! the window is drawn. Names are XML-escaped.
//!
//! Output is deterministic: the same timeline gives the same bytes.

use std::fmt::Write as _;

use crate::{human, InstantKind, Nanos, Slice, Timeline};

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 20.0;
const LANE: f64 = 12.0;
const GAP: f64 = 2.0;

/// A domain's colour by its position: golden-angle hues, three lightness
/// levels.
pub fn colour(dom: u32) -> String {
    let hue = (f64::from(dom) * 137.507_764) % 360.0;
    let light = [50, 65, 40][(dom % 3) as usize];
    format!("hsl({hue:.1},65%,{light}%)")
}

/// An instant kind's colour.
fn kind_colour(k: InstantKind) -> &'static str {
    match k {
        InstantKind::Pause => "#d62728",
        InstantKind::Unpause => "#2ca02c",
        InstantKind::Migrate => "#9467bd",
        InstantKind::Admission => "#1f77b4",
        InstantKind::LateSwitch => "#ff7f0e",
        InstantKind::Decision => "#333",
    }
}

/// `s` with XML's special characters escaped.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A tick step of 1, 2 or 5 × 10^k giving at most ~12 ticks.
fn tick_step(span: Nanos) -> Nanos {
    let mut step: Nanos = 1;
    loop {
        for m in [1, 2, 5] {
            let s = step.saturating_mul(m);
            if span / s <= 12 {
                return s.max(1);
            }
        }
        step = step.saturating_mul(10);
    }
}

fn time_label(t: Nanos, step: Nanos) -> String {
    use gang_core::{MS, SEC, US};
    let (div, unit) = if step.is_multiple_of(SEC) {
        (SEC, "s")
    } else if step.is_multiple_of(MS) {
        (MS, "ms")
    } else if step.is_multiple_of(US) {
        (US, "us")
    } else {
        (1, "ns")
    };
    format!("{}{unit}", t / div)
}

/// The header's line under the title: where the times come from.
fn subtitle(t: &Timeline) -> String {
    let m = &t.meta;
    let mut s = format!(
        "{}..{}, pool {}, grain {}",
        human(m.window.0),
        human(m.window.1),
        m.pool,
        gang_core::time::Duration(m.grain_ns)
    );
    if let Some(h) = &m.host {
        let _ = write!(s, ", host {h}");
    }
    if !m.clock.is_empty() {
        let _ = write!(s, "; {}", m.clock);
    }
    s
}

/// Renders the timeline (it need not pass [`Timeline::check`]: what is
/// there is drawn).
pub fn render(t: &Timeline) -> String {
    let (a, b) = t.meta.window;
    let span = b.saturating_sub(a).max(1);
    let scale = (WIDTH - LEFT - RIGHT) / span as f64;
    let x = |ns: Nanos| LEFT + (ns.saturating_sub(a)).min(span) as f64 * scale;
    let mut seen = vec![false; t.domains.len()];
    let mut kinds_seen = Vec::new();
    let mut body = String::new();
    let mut y0 = 52.0;
    let step = tick_step(span);
    for group in &t.groups {
        let lane_of = |cpu: u32| group.cpus.iter().position(|&c| c == cpu);
        let _ = writeln!(
            body,
            r#"<text x="10" y="{:.1}" class="h">{}</text>"#,
            y0 - 8.0,
            escape(&group.name)
        );
        for (i, cpu) in group.cpus.iter().enumerate() {
            let y = y0 + i as f64 * (LANE + GAP);
            let _ = writeln!(
                body,
                r##"<text x="{:.1}" y="{:.1}" class="l">CPU {cpu}</text><rect x="{LEFT}" y="{y:.1}" width="{:.1}" height="{LANE}" fill="#f4f4f4"/>"##,
                LEFT - 6.0,
                y + LANE - 2.0,
                WIDTH - LEFT - RIGHT
            );
        }
        // Merge back-to-back slots of the same domain and vCPU on one CPU.
        let mut merged: Vec<Slice> = Vec::new();
        for s in t.clipped(group) {
            match merged.last_mut() {
                Some(m)
                    if m.cpu == s.cpu
                        && m.domain == s.domain
                        && m.vcpu == s.vcpu
                        && m.end == s.real_start() =>
                {
                    m.end = s.end;
                }
                _ => merged.push(s),
            }
        }
        for s in &merged {
            let Some(lane) = lane_of(s.cpu) else { continue };
            let d = t.domain_index(s.domain);
            if let Some(seen) = d.and_then(|d| seen.get_mut(d)) {
                *seen = true;
            }
            let y = y0 + lane as f64 * (LANE + GAP);
            let start = s.real_start();
            let w = ((s.end - start) as f64 * scale).max(0.3);
            let name = d.map_or("?", |d| t.domains[d].name.as_str());
            let vcpu = s.vcpu.map_or_else(String::new, |v| format!(" v{v}"));
            let _ = writeln!(
                body,
                r#"<rect x="{:.2}" y="{y:.1}" width="{w:.2}" height="{LANE}" fill="{}"><title>{}{vcpu} {start}..{} ns</title></rect>"#,
                x(start),
                colour(d.map_or(7919, |d| d as u32)),
                escape(name),
                s.end
            );
        }
        let lanes_h = group.cpus.len() as f64 * (LANE + GAP);
        let instants = t.instants_in(group);
        let mut decisions = String::new();
        for i in &instants {
            if i.kind == InstantKind::Decision {
                let _ = write!(
                    decisions,
                    "M{:.2} {:.1}v{:.1}",
                    x(i.at),
                    y0 - 3.0,
                    lanes_h + 3.0
                );
                if !kinds_seen.contains(&i.kind) {
                    kinds_seen.push(i.kind);
                }
                continue;
            }
            let (top, h) = match i.cpu.and_then(lane_of) {
                Some(lane) => (y0 + lane as f64 * (LANE + GAP) - 1.0, LANE + 2.0),
                None => (y0 - 3.0, lanes_h + 3.0),
            };
            if !kinds_seen.contains(&i.kind) {
                kinds_seen.push(i.kind);
            }
            // A line over its lane(s) and a dot above the block, which
            // stays visible among dense slots.
            let _ = writeln!(
                body,
                r#"<g stroke="{2}" fill="{2}"><title>{3} at {4} ns: {5}</title><line x1="{0:.2}" y1="{top:.1}" x2="{0:.2}" y2="{1:.1}" stroke-width="1.2"/><circle cx="{0:.2}" cy="{6:.1}" r="2.5"/></g>"#,
                x(i.at),
                top + h,
                kind_colour(i.kind),
                i.kind,
                i.at,
                escape(&i.text),
                y0 - 6.0
            );
        }
        if !decisions.is_empty() {
            let _ = writeln!(
                body,
                r##"<path d="{decisions}" stroke="#333" stroke-width="0.4" opacity="0.45"/>"##
            );
        }
        // Axis.
        let ay = y0 + lanes_h + 2.0;
        let _ = writeln!(
            body,
            r##"<line x1="{LEFT}" y1="{ay:.1}" x2="{:.1}" y2="{ay:.1}" stroke="#000" stroke-width="0.8"/>"##,
            WIDTH - RIGHT
        );
        let mut tick = a.div_ceil(step) * step;
        while tick <= b {
            let tx = x(tick);
            let _ = writeln!(
                body,
                r##"<line x1="{tx:.1}" y1="{ay:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#000" stroke-width="0.8"/><text x="{tx:.1}" y="{:.1}" class="t">{}</text>"##,
                ay + 4.0,
                ay + 14.0,
                time_label(tick, step)
            );
            tick += step;
        }
        y0 += lanes_h + 40.0;
    }
    let (legend, height) = legend(t, &seen, &kinds_seen, y0);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        o,
        "<style>.h{{font-size:13px;font-weight:bold}} .l{{font-size:10px;text-anchor:end}} .t{{font-size:10px;text-anchor:middle}} .g{{font-size:10px}}</style>"
    );
    let _ = writeln!(
        o,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height:.0}" fill="#fff"/>"##
    );
    let _ = writeln!(
        o,
        r#"<text x="10" y="16" class="h">{}</text><text x="10" y="30" class="g">{}</text>"#,
        escape(&t.meta.title),
        escape(&subtitle(t))
    );
    o.push_str(&body);
    o.push_str(&legend);
    o.push_str("</svg>\n");
    o
}

/// The legend below the blocks, and the picture's height.
fn legend(t: &Timeline, seen: &[bool], kinds: &[InstantKind], y0: f64) -> (String, f64) {
    let shown: Vec<usize> = (0..t.domains.len()).filter(|&d| seen[d]).collect();
    let per_row = 6usize;
    let limit = 120usize;
    let mut legend = String::new();
    for (k, &d) in shown.iter().take(limit).enumerate() {
        let lx = LEFT + (k % per_row) as f64 * 170.0;
        let ly = y0 + (k / per_row) as f64 * 16.0;
        let _ = writeln!(
            legend,
            r#"<rect x="{lx:.1}" y="{ly:.1}" width="12" height="10" fill="{}"/><text x="{:.1}" y="{:.1}" class="g">{}</text>"#,
            colour(d as u32),
            lx + 16.0,
            ly + 9.0,
            escape(&t.domains[d].name)
        );
    }
    let rows = shown.len().min(limit).div_ceil(per_row);
    let mut height = y0 + rows as f64 * 16.0 + 10.0;
    if shown.len() > limit {
        let _ = writeln!(
            legend,
            r#"<text x="{LEFT}" y="{:.1}" class="g">… and {} more domains</text>"#,
            height + 4.0,
            shown.len() - limit
        );
        height += 18.0;
    }
    let mut kinds: Vec<InstantKind> = kinds.to_vec();
    kinds.sort();
    for (k, kind) in kinds.iter().enumerate() {
        let lx = LEFT + k as f64 * 120.0;
        let _ = writeln!(
            legend,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{lx:.1}" y2="{:.1}" stroke="{}" stroke-width="2"/><text x="{:.1}" y="{:.1}" class="g">{kind}</text>"#,
            height,
            height + 11.0,
            kind_colour(*kind),
            lx + 6.0,
            height + 9.0
        );
    }
    if !kinds.is_empty() {
        height += 18.0;
    }
    (legend, height)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample;
    use crate::{Domain, Group, Instant, Meta};

    #[test]
    fn renders_lanes_slots_instants_axis_and_legend() {
        let t = sample();
        let svg = render(&t);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("CPU 2") && svg.contains("CPU 3"));
        assert_eq!(svg.matches("<rect").count() - 1 - 2 - 2, 12, "{svg}");
        assert!(svg.contains("a &quot;quoted&quot; &lt;&amp;&gt;"));
        assert!(svg.contains("pool &quot;P&quot; &lt;x&gt;"));
        assert!(svg.contains(">pause<") && svg.contains(">late-switch<"));
        assert!(svg.contains("switch 80us late"));
        assert!(!svg.contains("outside the window"));
        assert!(svg.contains(">10ms<") && svg.contains(">50ms<"));
        assert!(svg.contains("host h1"));
        assert_eq!(render(&t), svg, "deterministic");
    }

    #[test]
    fn back_to_back_slots_merge_and_decisions_are_one_path() {
        let slot = |start, end| Slice {
            cpu: 0,
            domain: 1,
            vcpu: Some(0),
            start,
            end,
            late: 0,
        };
        let t = Timeline {
            meta: Meta {
                window: (0, 20_000_000),
                ..Meta::default()
            },
            domains: vec![
                Domain {
                    id: 1,
                    name: "a".into(),
                },
                Domain {
                    id: 2,
                    name: "unseen".into(),
                },
            ],
            groups: vec![Group {
                name: "gang".into(),
                cpus: vec![0],
                slices: vec![slot(0, 5_000_000), slot(5_000_000, 10_000_000)],
                instants: [0, 10_000_000]
                    .iter()
                    .map(|&at| Instant {
                        at,
                        cpu: None,
                        kind: InstantKind::Decision,
                        text: String::new(),
                    })
                    .collect(),
            }],
        };
        let svg = render(&t);
        assert_eq!(svg.matches("<title>").count(), 1, "merged");
        assert_eq!(svg.matches("<path").count(), 1);
        assert!(!svg.contains(">unseen<"), "legend lists only drawn domains");
    }

    #[test]
    fn tick_steps() {
        assert_eq!(tick_step(200_000_000), 20_000_000);
        assert_eq!(tick_step(10_000), 1_000);
        assert_eq!(time_label(40_000_000, 20_000_000), "40ms");
    }
}
