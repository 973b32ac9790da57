//! Scenario files: what to simulate.
//!
//! A scenario is a TOML file naming a pool, its domains (each with a gang
//! policy in the seed tool's syntax and a synthetic workload), a duration, a
//! seed and the schedulers to compare. Parsing happens in two passes:
//!
//! 1. `serde` + `toml` into raw structs (`deny_unknown_fields` everywhere), so
//!    syntax errors, unknown keys and wrong types carry toml's line/column;
//! 2. validation into a [`Scenario`], where every semantic error names the
//!    domain and the field (`domain "a": policy: unknown policy `rr``) and,
//!    where the value has a span, its line and column.
//!
//! **Invariants of a validated [`Scenario`]** (relied on by the simulator):
//! domain names are unique and non-empty; `1 <= vcpus <= pool CPUs`; an
//! explicit CPU map has exactly `vcpus` distinct CPUs, all in the pool; every
//! workload duration is at least 1 ns; `duration > 0`; the pool has CPUs and a
//! non-zero grain.
//!
//! `[[generate]]` tables expand into many domains at load time (see
//! [`crate::generate`]); the expansion is a pure function of the table and the
//! seed, so a generated scenario is as reproducible as a hand-written one.

use std::fmt;
use std::path::Path;

use gang_core::cpuset::CpuSet;
use gang_core::time::{parse_duration, Duration, MS};
use gang_core::{CpuId, Nanos, Policy, PoolConfig};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Which scheduler model a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedKind {
    /// `gang_core::Scheduler`.
    Gang,
    /// The model of the uncoordinated Linux scheduler ([`crate::host`]).
    Host,
}

impl SchedKind {
    /// `gang` or `host`.
    pub fn name(self) -> &'static str {
        match self {
            SchedKind::Gang => "gang",
            SchedKind::Host => "host",
        }
    }
}

impl fmt::Display for SchedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SchedKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gang" => Ok(SchedKind::Gang),
            "host" => Ok(SchedKind::Host),
            other => Err(format!(
                "unknown scheduler `{other}` (expected gang or host)"
            )),
        }
    }
}

/// What each vCPU of a domain does. Durations are CPU time except `sleep`,
/// `period`, `deadline` and `offset`, which are wall (simulated) time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Workload {
    /// Always runnable; progress is CPU time.
    Busy,
    /// Compute `work`, then spin (runnable, burning CPU) until every vCPU of
    /// the domain arrives; progress is rounds.
    SpinBarrier {
        /// CPU time per round.
        work: Nanos,
        /// Per-round work varies uniformly by ±`jitter` percent.
        jitter: u8,
    },
    /// Compute `work`, then block until every vCPU arrives; the last arriver
    /// wakes the others. Progress is rounds.
    BlockingBarrier {
        /// CPU time per round.
        work: Nanos,
        /// ±percent.
        jitter: u8,
    },
    /// A job released at `offset + k·period` needs `exec` CPU time and should
    /// finish within `deadline` of its release; the vCPU blocks when it has
    /// no job. Progress is jobs done.
    Periodic {
        /// Release period.
        period: Nanos,
        /// CPU time per job.
        exec: Nanos,
        /// Relative deadline.
        deadline: Nanos,
        /// First release.
        offset: Nanos,
        /// ±percent on `exec`.
        jitter: u8,
    },
    /// Run `run` CPU time, block for `sleep`, repeat. Progress is cycles.
    SleepWake {
        /// CPU time per cycle.
        run: Nanos,
        /// Blocked time per cycle.
        sleep: Nanos,
        /// ±percent on both.
        jitter: u8,
    },
}

impl Workload {
    /// The kind's name as written in scenarios.
    pub fn kind(&self) -> &'static str {
        match self {
            Workload::Busy => "busy",
            Workload::SpinBarrier { .. } => "spin-barrier",
            Workload::BlockingBarrier { .. } => "blocking-barrier",
            Workload::Periodic { .. } => "periodic",
            Workload::SleepWake { .. } => "sleep-wake",
        }
    }

    /// What "progress" counts for this workload.
    pub fn progress_unit(&self) -> &'static str {
        match self {
            Workload::Busy => "cpu-ns",
            Workload::SpinBarrier { .. } | Workload::BlockingBarrier { .. } => "rounds",
            Workload::Periodic { .. } => "jobs",
            Workload::SleepWake { .. } => "cycles",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let j = |j: u8| {
            if j > 0 {
                format!(",±{j}%")
            } else {
                String::new()
            }
        };
        match *self {
            Workload::Busy => f.write_str("busy"),
            Workload::SpinBarrier { work, jitter } => {
                write!(f, "spin-barrier({}{})", Duration(work), j(jitter))
            }
            Workload::BlockingBarrier { work, jitter } => {
                write!(f, "blocking-barrier({}{})", Duration(work), j(jitter))
            }
            Workload::Periodic {
                period,
                exec,
                deadline,
                offset,
                jitter,
            } => {
                write!(f, "periodic({}/{}", Duration(exec), Duration(period))?;
                if deadline != period {
                    write!(f, ",d={}", Duration(deadline))?;
                }
                if offset != 0 {
                    write!(f, ",@{}", Duration(offset))?;
                }
                write!(f, "{})", j(jitter))
            }
            Workload::SleepWake { run, sleep, jitter } => {
                write!(
                    f,
                    "sleep-wake({}/{}{})",
                    Duration(run),
                    Duration(sleep),
                    j(jitter)
                )
            }
        }
    }
}

/// One domain of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainDef {
    /// Unique name.
    pub name: String,
    /// vCPU count.
    pub vcpus: u32,
    /// Gang policy.
    pub policy: Policy,
    /// Explicit CPU map (vCPU i on `cpu_map[i]`), or `None` (the core picks).
    pub cpu_map: Option<Vec<CpuId>>,
    /// Per-vCPU workload.
    pub workload: Workload,
}

/// A validated scenario (see the module invariants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Where it came from (for messages).
    pub file: String,
    /// Title.
    pub name: String,
    /// Simulated time.
    pub duration: Nanos,
    /// Seed of every random choice.
    pub seed: u64,
    /// Schedulers to run, in order, without repeats.
    pub schedulers: Vec<SchedKind>,
    /// The pool.
    pub pool: PoolConfig,
    /// Domains, in file order (generated ones where their table stands).
    pub domains: Vec<DomainDef>,
}

/// A position in a scenario file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Line.
    pub line: usize,
    /// Column (in characters).
    pub col: usize,
}

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a missing key or a wrong type.
    #[error("{}: {message}", at(file, *pos))]
    Syntax {
        /// The file.
        file: String,
        /// Where, when toml knows.
        pos: Option<Pos>,
        /// toml's / serde's message.
        message: String,
    },
    /// A value that is well-formed TOML but means nothing valid.
    #[error("{}: {what}: {message}", at(file, *pos))]
    Invalid {
        /// The file.
        file: String,
        /// Where, when the value has a span.
        pos: Option<Pos>,
        /// The domain / table and field, e.g. `domain "a": policy`.
        what: String,
        /// Why.
        message: String,
    },
}

fn at(file: &str, pos: Option<Pos>) -> String {
    match pos {
        Some(p) => format!("{file}:{}:{}", p.line, p.col),
        None => file.to_string(),
    }
}

impl ScenarioError {
    /// The 1-based position the error points at, if any.
    pub fn pos(&self) -> Option<Pos> {
        match self {
            ScenarioError::Read { .. } => None,
            ScenarioError::Syntax { pos, .. } | ScenarioError::Invalid { pos, .. } => *pos,
        }
    }
}

// ---------------------------------------------------------------------------
// Raw (pass 1) structures.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    duration: Spanned<String>,
    #[serde(default)]
    seed: u64,
    schedulers: Option<Spanned<Vec<String>>>,
    pool: RawPool,
    #[serde(default, rename = "domain")]
    domains: Vec<RawDomain>,
    #[serde(default, rename = "generate")]
    generate: Vec<Spanned<crate::generate::RawGenerate>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    cpus: Spanned<String>,
    grain: Option<Spanned<String>>,
    be_slice: Option<Spanned<String>>,
    be_reserve_pct: Option<Spanned<u8>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: Spanned<String>,
    vcpus: Spanned<u32>,
    policy: Option<Spanned<String>>,
    cpus: Option<Spanned<String>>,
    workload: Option<Spanned<RawWorkload>>,
}

/// A workload as written (durations still text). Internally tagged by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) enum RawWorkload {
    Busy {},
    SpinBarrier {
        work: String,
        #[serde(default)]
        jitter: u8,
    },
    BlockingBarrier {
        work: String,
        #[serde(default)]
        jitter: u8,
    },
    Periodic {
        period: String,
        exec: String,
        deadline: Option<String>,
        offset: Option<String>,
        #[serde(default)]
        jitter: u8,
    },
    SleepWake {
        run: String,
        sleep: String,
        #[serde(default)]
        jitter: u8,
    },
}

// ---------------------------------------------------------------------------
// Pass 2: validation.

/// Validation context: the file's name and text (for spans → line/column).
pub(crate) struct Ctx<'a> {
    pub(crate) file: &'a str,
    pub(crate) text: &'a str,
}

impl Ctx<'_> {
    pub(crate) fn pos(&self, offset: usize) -> Pos {
        let upto = &self.text[..offset.min(self.text.len())];
        let line = upto.matches('\n').count() + 1;
        let col = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Pos { line, col }
    }

    pub(crate) fn invalid(
        &self,
        span: Option<std::ops::Range<usize>>,
        what: impl Into<String>,
        message: impl fmt::Display,
    ) -> ScenarioError {
        ScenarioError::Invalid {
            file: self.file.to_string(),
            pos: span.map(|s| self.pos(s.start)),
            what: what.into(),
            message: message.to_string(),
        }
    }

    fn duration(&self, v: &Spanned<String>, what: &str) -> Result<Nanos, ScenarioError> {
        let d =
            parse_duration(v.get_ref(), MS).map_err(|e| self.invalid(Some(v.span()), what, e))?;
        if d == 0 {
            return Err(self.invalid(Some(v.span()), what, "must be longer than 0"));
        }
        Ok(d)
    }
}

/// Parses a workload's text durations. `span` is the workload table's span,
/// `what` the context (`domain "a"`).
pub(crate) fn workload_from_raw(
    ctx: &Ctx<'_>,
    raw: &RawWorkload,
    span: Option<std::ops::Range<usize>>,
    what: &str,
) -> Result<Workload, ScenarioError> {
    let dur = |text: &str, field: &str| -> Result<Nanos, ScenarioError> {
        let d = parse_duration(text, MS)
            .map_err(|e| ctx.invalid(span.clone(), format!("{what}: workload.{field}"), e))?;
        if d == 0 {
            return Err(ctx.invalid(
                span.clone(),
                format!("{what}: workload.{field}"),
                "must be longer than 0",
            ));
        }
        Ok(d)
    };
    let jit = |j: u8| -> Result<u8, ScenarioError> {
        if j > 100 {
            return Err(ctx.invalid(
                span.clone(),
                format!("{what}: workload.jitter"),
                format!("{j} is not a percentage from 0 to 100"),
            ));
        }
        Ok(j)
    };
    Ok(match raw {
        RawWorkload::Busy {} => Workload::Busy,
        RawWorkload::SpinBarrier { work, jitter } => Workload::SpinBarrier {
            work: dur(work, "work")?,
            jitter: jit(*jitter)?,
        },
        RawWorkload::BlockingBarrier { work, jitter } => Workload::BlockingBarrier {
            work: dur(work, "work")?,
            jitter: jit(*jitter)?,
        },
        RawWorkload::Periodic {
            period,
            exec,
            deadline,
            offset,
            jitter,
        } => {
            let period = dur(period, "period")?;
            let deadline = match deadline {
                Some(d) => dur(d, "deadline")?,
                None => period,
            };
            let offset = match offset {
                Some(o) => parse_duration(o, MS).map_err(|e| {
                    ctx.invalid(span.clone(), format!("{what}: workload.offset"), e)
                })?,
                None => 0,
            };
            Workload::Periodic {
                period,
                exec: dur(exec, "exec")?,
                deadline,
                offset,
                jitter: jit(*jitter)?,
            }
        }
        RawWorkload::SleepWake { run, sleep, jitter } => Workload::SleepWake {
            run: dur(run, "run")?,
            sleep: dur(sleep, "sleep")?,
            jitter: jit(*jitter)?,
        },
    })
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            file: file.clone(),
            source,
        })?;
        Scenario::parse(&file, &text)
    }

    /// Validates scenario text; `file` names it in messages.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let ctx = Ctx { file, text };
        let raw: RawScenario = toml::from_str(text).map_err(|e| ScenarioError::Syntax {
            file: file.to_string(),
            pos: e.span().map(|s| ctx.pos(s.start)),
            message: e.message().trim_end().to_string(),
        })?;

        let duration = ctx.duration(&raw.duration, "duration")?;
        let schedulers = match &raw.schedulers {
            None => vec![SchedKind::Gang, SchedKind::Host],
            Some(list) => {
                let mut out = Vec::new();
                for s in list.get_ref() {
                    let k: SchedKind = s
                        .parse()
                        .map_err(|m: String| ctx.invalid(Some(list.span()), "schedulers", m))?;
                    if out.contains(&k) {
                        return Err(ctx.invalid(
                            Some(list.span()),
                            "schedulers",
                            format!("`{k}` is listed twice"),
                        ));
                    }
                    out.push(k);
                }
                if out.is_empty() {
                    return Err(ctx.invalid(Some(list.span()), "schedulers", "the list is empty"));
                }
                out
            }
        };

        let cpus = CpuSet::parse(raw.pool.cpus.get_ref(), None)
            .map_err(|e| ctx.invalid(Some(raw.pool.cpus.span()), "pool: cpus", e))?;
        if cpus.is_empty() {
            return Err(ctx.invalid(
                Some(raw.pool.cpus.span()),
                "pool: cpus",
                "the pool has no CPUs",
            ));
        }
        let mut pool = PoolConfig::new(cpus);
        if let Some(g) = &raw.pool.grain {
            pool.grain = ctx.duration(g, "pool: grain")?;
        }
        if let Some(s) = &raw.pool.be_slice {
            pool.be_slice = ctx.duration(s, "pool: be_slice")?;
            if !pool.be_slice.is_multiple_of(pool.grain) {
                return Err(ctx.invalid(
                    Some(s.span()),
                    "pool: be_slice",
                    format!("must be a multiple of the grain ({})", Duration(pool.grain)),
                ));
            }
        }
        if let Some(p) = &raw.pool.be_reserve_pct {
            if *p.get_ref() > 100 {
                return Err(ctx.invalid(
                    Some(p.span()),
                    "pool: be_reserve_pct",
                    format!("{} is not a percentage from 0 to 100", p.get_ref()),
                ));
            }
            pool.be_reserve_pct = *p.get_ref();
        }

        let mut domains: Vec<DomainDef> = Vec::new();
        for d in &raw.domains {
            let def = domain_from_raw(&ctx, &pool.cpus, d)?;
            if domains.iter().any(|o| o.name == def.name) {
                return Err(ctx.invalid(
                    Some(d.name.span()),
                    format!("domain \"{}\"", def.name),
                    "name: another domain has this name",
                ));
            }
            domains.push(def);
        }
        for (i, g) in raw.generate.iter().enumerate() {
            let generated = crate::generate::expand(&ctx, &pool, g, i, raw.seed, &domains)?;
            for def in generated {
                if domains.iter().any(|o| o.name == def.name) {
                    return Err(ctx.invalid(
                        Some(g.span()),
                        format!("generate #{}", i + 1),
                        format!(
                            "name: generated domain \"{}\" clashes with another",
                            def.name
                        ),
                    ));
                }
                domains.push(def);
            }
        }
        if domains.is_empty() {
            return Err(ScenarioError::Invalid {
                file: file.to_string(),
                pos: None,
                what: "domain".into(),
                message: "the scenario has no domains (add [[domain]] or [[generate]] tables)"
                    .into(),
            });
        }
        Ok(Scenario {
            file: file.to_string(),
            name: raw.name.unwrap_or_else(|| file.to_string()),
            duration,
            seed: raw.seed,
            schedulers,
            pool,
            domains,
        })
    }

    /// Total vCPUs.
    pub fn vcpus(&self) -> usize {
        self.domains.iter().map(|d| d.vcpus as usize).sum()
    }
}

fn domain_from_raw(
    ctx: &Ctx<'_>,
    pool: &CpuSet,
    d: &RawDomain,
) -> Result<DomainDef, ScenarioError> {
    let name = d.name.get_ref().trim().to_string();
    if name.is_empty() {
        return Err(ctx.invalid(Some(d.name.span()), "domain", "name: must not be empty"));
    }
    let what = format!("domain \"{name}\"");
    let vcpus = *d.vcpus.get_ref();
    if vcpus == 0 || vcpus as usize > pool.len() {
        return Err(ctx.invalid(
            Some(d.vcpus.span()),
            format!("{what}: vcpus"),
            format!("{vcpus}: must be from 1 to the pool's {} CPUs", pool.len()),
        ));
    }
    let policy = match &d.policy {
        None => Policy::default(),
        Some(p) => p
            .get_ref()
            .parse::<Policy>()
            .map_err(|e| ctx.invalid(Some(p.span()), format!("{what}: policy"), e))?,
    };
    let cpu_map = match &d.cpus {
        None => None,
        Some(c) => Some(cpu_map(ctx, pool, c, vcpus, &what)?),
    };
    let workload = match &d.workload {
        None => Workload::Busy,
        Some(w) => workload_from_raw(ctx, w.get_ref(), Some(w.span()), &what)?,
    };
    Ok(DomainDef {
        name,
        vcpus,
        policy,
        cpu_map,
        workload,
    })
}

/// Parses an explicit CPU map: an xl list whose i-th CPU (in list order) is
/// vCPU i's.
fn cpu_map(
    ctx: &Ctx<'_>,
    pool: &CpuSet,
    c: &Spanned<String>,
    vcpus: u32,
    what: &str,
) -> Result<Vec<CpuId>, ScenarioError> {
    let err = |m: String| ctx.invalid(Some(c.span()), format!("{what}: cpus"), m);
    // Keep the written order: parse each item on its own.
    let mut map: Vec<CpuId> = Vec::new();
    for item in c.get_ref().split(',') {
        let set = CpuSet::parse(item, Some(pool)).map_err(|e| err(e.to_string()))?;
        for cpu in set.iter() {
            if map.contains(&cpu) {
                return Err(err(format!("CPU {cpu} is listed twice")));
            }
            map.push(cpu);
        }
    }
    if let Some(bad) = map.iter().find(|c| !pool.contains(**c)) {
        return Err(err(format!("CPU {bad} is not in the pool ({pool})")));
    }
    if map.len() != vcpus as usize {
        return Err(err(format!(
            "lists {} CPUs for {vcpus} vCPUs (one CPU per vCPU)",
            map.len()
        )));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
duration = "2s"
seed = 42
schedulers = ["gang", "host"]
[pool]
cpus = "0-1"
grain = "1ms"
[[domain]]
name = "a"
vcpus = 2
policy = "be,256"
cpus = "1,0"
workload = { kind = "spin-barrier", work = "1us" }
[[domain]]
name = "b"
vcpus = 1
workload = { kind = "periodic", period = "10ms", exec = "2ms", jitter = 10 }
"#;

    fn err(text: &str) -> String {
        match Scenario::parse("x.toml", text) {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn with(replace: &str, by: &str) -> String {
        assert!(GOOD.contains(replace), "{replace}");
        GOOD.replacen(replace, by, 1)
    }

    #[test]
    fn parses_a_good_scenario() {
        let s = Scenario::parse("x.toml", GOOD).unwrap();
        assert_eq!(s.duration, 2_000_000_000);
        assert_eq!(s.seed, 42);
        assert_eq!(s.schedulers, vec![SchedKind::Gang, SchedKind::Host]);
        assert_eq!(s.pool.cpus.len(), 2);
        assert_eq!(s.domains[0].cpu_map, Some(vec![1, 0]));
        assert_eq!(
            s.domains[0].workload,
            Workload::SpinBarrier {
                work: 1000,
                jitter: 0
            }
        );
        assert_eq!(s.domains[1].policy, Policy::default());
        assert_eq!(
            s.domains[1].workload,
            Workload::Periodic {
                period: 10 * MS,
                exec: 2 * MS,
                deadline: 10 * MS,
                offset: 0,
                jitter: 10
            }
        );
        assert_eq!(s.vcpus(), 3);
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let e = err(&with("vcpus = 2", "vcpus = ")); // line 11
        assert!(e.starts_with("x.toml:11:"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = err(&with("grain = \"1ms\"", "grain = \"1ms\"\nslice = 3"));
        assert!(e.contains("slice") && e.starts_with("x.toml:9:"), "{e}");
        let e = err(&with("work = \"1us\"", "work = \"1us\", spin = 1"));
        assert!(e.contains("spin") && e.starts_with("x.toml:"), "{e}");
        let e = err(&with("name = \"t\"", "name = \"t\"\nbogus = 1"));
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn missing_and_mistyped_fields() {
        assert!(err(&with("duration = \"2s\"", "")).contains("duration"));
        assert!(err(&with("vcpus = 2", "vcpus = \"two\"")).starts_with("x.toml:11:"));
        assert!(err(&with("kind = \"spin-barrier\"", "kind = \"spin\"")).contains("spin"));
        let e = err(&with(", work = \"1us\"", ""));
        assert!(
            e.contains("missing field `work`") && e.starts_with("x.toml:14:12:"),
            "{e}"
        );
    }

    #[test]
    fn semantic_errors_name_domain_and_field() {
        let e = err(&with("policy = \"be,256\"", "policy = \"rr\""));
        assert_eq!(
            e,
            "x.toml:12:10: domain \"a\": policy: unknown policy `rr` (expected no, tt,PERIOD,ACTIVE[,sf], et,PERIOD,ACTIVE[,sf] or be,WEIGHT[,sf])"
        );
        let e = err(&with("work = \"1us\"", "work = \"1 parsec\""));
        assert!(
            e.contains("domain \"a\": workload.work: unknown unit"),
            "{e}"
        );
        let e = err(&with("work = \"1us\"", "work = \"0\""));
        assert!(e.contains("workload.work: must be longer than 0"), "{e}");
        let e = err(&with("jitter = 10", "jitter = 101"));
        assert!(e.contains("domain \"b\": workload.jitter"), "{e}");
        let e = err(&with("exec = \"2ms\"", "exec = \"2xs\""));
        assert!(e.contains("domain \"b\": workload.exec"), "{e}");
    }

    #[test]
    fn cpu_map_errors() {
        let e = err(&with("cpus = \"1,0\"", "cpus = \"0\""));
        assert!(
            e.contains("domain \"a\": cpus: lists 1 CPUs for 2 vCPUs"),
            "{e}"
        );
        let e = err(&with("cpus = \"1,0\"", "cpus = \"0,5\""));
        assert!(e.contains("CPU 5 is not in the pool (0-1)"), "{e}");
        let e = err(&with("cpus = \"1,0\"", "cpus = \"0,0\""));
        assert!(e.contains("listed twice"), "{e}");
        let e = err(&with("cpus = \"1,0\"", "cpus = \"1-0\""));
        assert!(e.contains("Invalid pcpu range"), "{e}");
    }

    #[test]
    fn pool_and_top_level_errors() {
        let e = err(&with("cpus = \"0-1\"", "cpus = \"x\""));
        assert!(e.starts_with("x.toml:7:8: pool: cpus:"), "{e}");
        assert!(
            err(&with("grain = \"1ms\"", "grain = \"0\"")).contains("pool: grain: must be longer")
        );
        assert!(err(&with(
            "grain = \"1ms\"",
            "grain = \"1ms\"\nbe_slice = \"1500us\""
        ))
        .contains("multiple of the grain"));
        assert!(err(&with("grain = \"1ms\"", "be_reserve_pct = 150")).contains("be_reserve_pct"));
        assert!(
            err(&with("duration = \"2s\"", "duration = \"2 fortnights\"")).contains("duration")
        );
        let e = err(&with("[\"gang\", \"host\"]", "[\"gang\", \"cfs\"]"));
        assert!(e.contains("schedulers: unknown scheduler `cfs`"), "{e}");
        assert!(err(&with("[\"gang\", \"host\"]", "[\"gang\", \"gang\"]")).contains("twice"));
        assert!(err(&with("[\"gang\", \"host\"]", "[]")).contains("empty"));
    }

    #[test]
    fn domain_errors() {
        let e = err(&with("vcpus = 2", "vcpus = 3"));
        assert!(
            e.contains("domain \"a\": vcpus: 3: must be from 1 to the pool's 2 CPUs"),
            "{e}"
        );
        assert!(err(&with("vcpus = 2", "vcpus = 0")).contains("vcpus"));
        let e = err(&with("name = \"b\"", "name = \"a\""));
        assert!(e.contains("another domain has this name"), "{e}");
        assert!(err(&with("name = \"b\"", "name = \" \"")).contains("must not be empty"));
        let e = err("duration = \"1s\"\n[pool]\ncpus = \"0\"\n");
        assert!(e.contains("no domains"), "{e}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let e = Scenario::load(Path::new("/nonexistent/x.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/x.toml: cannot read"),
            "{e}"
        );
    }
}
