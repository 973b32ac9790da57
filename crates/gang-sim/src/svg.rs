//! SVG timelines.
//!
//! One block per scheduler; in it one lane per pool CPU, with a rectangle
//! for every interval a vCPU *ran* there (dispatched and runnable), coloured
//! by domain. Gang blocks also get a thin vertical tick at every decision
//! that changed a dispatch. A time axis runs along each block; a legend names
//! the domains that appear. Only the recording window is drawn (the world
//! records intervals only inside it), so files stay small.
//!
//! Output is deterministic: the same intervals give the same bytes.

use std::fmt::Write as _;

use gang_core::{CpuId, Nanos};

use crate::scenario::SchedKind;
use crate::world::Interval;

/// What one run contributes to the picture.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Per run: scheduler, running intervals, decision marks.
    pub runs: Vec<(SchedKind, Vec<TimelineInterval>, Vec<Nanos>)>,
    /// The drawn window.
    pub window: (Nanos, Nanos),
}

/// A running interval of a domain on a CPU (CPU index, not id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineInterval {
    /// CPU index in the pool (0-based, ascending ids).
    pub cpu: u32,
    /// Start.
    pub start: Nanos,
    /// End.
    pub end: Nanos,
    /// Domain index.
    pub dom: u32,
}

impl From<Interval> for TimelineInterval {
    fn from(i: Interval) -> Self {
        TimelineInterval {
            cpu: i.cpu,
            start: i.start,
            end: i.end,
            dom: i.dom,
        }
    }
}

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 20.0;
const LANE: f64 = 12.0;
const GAP: f64 = 2.0;

/// A domain's colour: golden-angle hues, three lightness levels.
pub fn colour(dom: u32) -> String {
    let hue = (f64::from(dom) * 137.507_764) % 360.0;
    let light = [50, 65, 40][(dom % 3) as usize];
    format!("hsl({hue:.1},65%,{light}%)")
}

fn escape(s: &str) -> String {
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

/// Renders the timeline. `cpus` are the pool's CPU ids (lane labels),
/// `names` the domains' names.
pub fn render(t: &Timeline, title: &str, cpus: &[CpuId], names: &[String]) -> String {
    let (a, b) = t.window;
    let span = (b - a).max(1);
    let scale = (WIDTH - LEFT - RIGHT) / span as f64;
    let x = |ns: Nanos| LEFT + (ns.saturating_sub(a)) as f64 * scale;
    let block_h = cpus.len() as f64 * (LANE + GAP) + 40.0;
    let mut seen = vec![false; names.len()];
    let mut body = String::new();
    let mut y0 = 40.0;
    let step = tick_step(span);
    for (kind, intervals, marks) in &t.runs {
        let _ = writeln!(
            body,
            r#"<text x="10" y="{:.1}" class="h">{kind}</text>"#,
            y0 - 8.0
        );
        for (i, cpu) in cpus.iter().enumerate() {
            let y = y0 + i as f64 * (LANE + GAP);
            let _ = writeln!(
                body,
                r##"<text x="{:.1}" y="{:.1}" class="l">CPU {cpu}</text><rect x="{LEFT}" y="{y:.1}" width="{:.1}" height="{LANE}" fill="#f4f4f4"/>"##,
                LEFT - 6.0,
                y + LANE - 2.0,
                WIDTH - LEFT - RIGHT
            );
        }
        // Merge back-to-back intervals of the same domain on the same CPU.
        let mut sorted = intervals.clone();
        sorted.sort_by_key(|i| (i.cpu, i.start));
        let mut merged: Vec<TimelineInterval> = Vec::with_capacity(sorted.len());
        for i in sorted {
            match merged.last_mut() {
                Some(m) if m.cpu == i.cpu && m.dom == i.dom && m.end == i.start => m.end = i.end,
                _ => merged.push(i),
            }
        }
        for i in &merged {
            if let Some(s) = seen.get_mut(i.dom as usize) {
                *s = true;
            }
            let y = y0 + f64::from(i.cpu) * (LANE + GAP);
            let w = ((i.end - i.start) as f64 * scale).max(0.3);
            let name = names.get(i.dom as usize).map_or("?", String::as_str);
            let _ = writeln!(
                body,
                r#"<rect x="{:.2}" y="{y:.1}" width="{w:.2}" height="{LANE}" fill="{}"><title>{} {}..{} ns</title></rect>"#,
                x(i.start),
                colour(i.dom),
                escape(name),
                i.start,
                i.end
            );
        }
        let lanes_h = cpus.len() as f64 * (LANE + GAP);
        if !marks.is_empty() {
            let mut path = String::new();
            for &m in marks {
                let _ = write!(path, "M{:.2} {:.1}v{:.1}", x(m), y0 - 3.0, lanes_h + 3.0);
            }
            let _ = writeln!(
                body,
                r##"<path d="{path}" stroke="#333" stroke-width="0.4" opacity="0.45"/>"##
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
        y0 += block_h;
    }
    // Legend.
    let shown: Vec<usize> = (0..names.len()).filter(|&d| seen[d]).collect();
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
            escape(&names[d])
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
        r#"<text x="10" y="16" class="h">{} — {}..{} (ticks: gang decisions)</text>"#,
        escape(title),
        crate::report::human(a),
        crate::report::human(b)
    );
    o.push_str(&body);
    o.push_str(&legend);
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_lanes_intervals_marks_axis_and_legend() {
        let t = Timeline {
            runs: vec![
                (
                    SchedKind::Gang,
                    vec![
                        TimelineInterval {
                            cpu: 0,
                            start: 0,
                            end: 5_000_000,
                            dom: 0,
                        },
                        TimelineInterval {
                            cpu: 0,
                            start: 5_000_000,
                            end: 10_000_000,
                            dom: 0,
                        },
                        TimelineInterval {
                            cpu: 1,
                            start: 0,
                            end: 10_000_000,
                            dom: 1,
                        },
                    ],
                    vec![0, 10_000_000],
                ),
                (SchedKind::Host, vec![], vec![]),
            ],
            window: (0, 20_000_000),
        };
        let names = vec!["a<1>".to_string(), "b".to_string(), "unseen".to_string()];
        let svg = render(&t, "demo", &[4, 5], &names);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(
            svg.matches("<title>").count(),
            2,
            "back-to-back intervals merge"
        );
        assert!(svg.contains("CPU 4") && svg.contains("CPU 5"));
        assert!(svg.contains("a&lt;1&gt;"));
        assert!(!svg.contains(">unseen<"), "legend lists only drawn domains");
        assert!(svg.contains(">10ms<") && svg.contains(">20ms<"));
        assert_eq!(
            svg.matches("<path").count(),
            1,
            "marks only for the gang run"
        );
        assert_eq!(render(&t, "demo", &[4, 5], &names), svg);
    }

    #[test]
    fn tick_steps() {
        assert_eq!(tick_step(200_000_000), 20_000_000);
        assert_eq!(tick_step(10_000), 1_000);
        assert_eq!(time_label(40_000_000, 20_000_000), "40ms");
    }
}
