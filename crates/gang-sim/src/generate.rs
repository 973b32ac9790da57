//! `[[generate]]` tables: many domains from one seeded recipe.
//!
//! Writing 200 domains by hand is error-prone, and a checked-in generated file
//! drifts from its generator. A scenario may instead say
//!
//! ```toml
//! [[generate]]
//! count = 200
//! prefix = "d"              # names d000, d001, … (default "g")
//! vcpus = [1, 4]            # inclusive range, uniform
//! reserved_cap_pct = 80     # per-CPU TT+ET utilisation cap (default 80)
//! mix = [
//!   { weight = 2, policy = "tt,20ms,2ms", workload = { kind = "periodic", period = "20ms", exec = "1500us" } },
//!   { weight = 3, policy = "be,256", workload = { kind = "busy" } },
//! ]
//! ```
//!
//! **Algorithm.** For each domain, draw a `mix` entry by weight and a vCPU
//! count, from a ChaCha8 stream seeded by the table's `seed` (default: the
//! scenario's) and the table's index. CPU maps are chosen here, explicitly,
//! so the per-CPU reserved utilisation stays under the cap: a TT/ET domain
//! takes the `vcpus` CPUs with the least reserved utilisation (ties: fewest
//! vCPUs, then lowest id); if even those would exceed `reserved_cap_pct`, the
//! domain is demoted to `be,256` with the same workload. BE domains take the
//! CPUs with the fewest vCPUs. Explicitly mapped hand-written domains count
//! towards the loads.
//!
//! **Properties.** Pure function of (table, seed, earlier domains): the same
//! file always yields the same domains. Every generated map has `vcpus`
//! distinct pool CPUs. Per-CPU TT+ET utilisation (sum of active/period) stays
//! ≤ the cap — necessary, not sufficient, for gang schedulability; harmonic
//! periods keep the core's tables short and easy to fill.

use gang_core::{CpuId, Policy, PoolConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use toml::Spanned;

use crate::scenario::{workload_from_raw, Ctx, DomainDef, RawWorkload, ScenarioError};

/// A `[[generate]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGenerate {
    count: u32,
    #[serde(default = "default_prefix")]
    prefix: String,
    vcpus: [u32; 2],
    seed: Option<u64>,
    #[serde(default = "default_cap")]
    reserved_cap_pct: u8,
    mix: Vec<RawMix>,
}

fn default_prefix() -> String {
    "g".into()
}

fn default_cap() -> u8 {
    80
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMix {
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default = "default_policy")]
    policy: String,
    workload: RawWorkload,
}

fn default_policy() -> String {
    "be,256".into()
}

/// The most domains one `[[generate]]` table may make: far beyond any
/// simulated host (the core admits 1,000 TT domains on 256 CPUs), and small
/// enough that a typo (`count = 4294967295`) is an error, not an
/// allocation that aborts the process.
pub(crate) const MAX_GENERATED: u32 = 100_000;

/// Expands table number `index` (0-based) into domains.
pub(crate) fn expand(
    ctx: &Ctx<'_>,
    pool: &PoolConfig,
    g: &Spanned<RawGenerate>,
    index: usize,
    scenario_seed: u64,
    earlier: &[DomainDef],
) -> Result<Vec<DomainDef>, ScenarioError> {
    let span = Some(g.span());
    let what = format!("generate #{}", index + 1);
    let raw = g.get_ref();
    let invalid = |field: &str, m: String| ctx.invalid(span.clone(), format!("{what}: {field}"), m);

    let cpus: Vec<CpuId> = pool.cpus.iter().collect();
    let [lo, hi] = raw.vcpus;
    if lo == 0 || lo > hi || hi as usize > cpus.len() {
        return Err(invalid(
            "vcpus",
            format!(
                "[{lo}, {hi}]: need 1 <= low <= high <= the pool's {} CPUs",
                cpus.len()
            ),
        ));
    }
    if raw.count > MAX_GENERATED {
        return Err(invalid(
            "count",
            format!(
                "{} domains is more than one table may generate ({MAX_GENERATED}); split it",
                raw.count
            ),
        ));
    }
    if raw.reserved_cap_pct > 100 {
        return Err(invalid(
            "reserved_cap_pct",
            format!("{} is not a percentage", raw.reserved_cap_pct),
        ));
    }
    if raw.mix.is_empty() {
        return Err(invalid("mix", "needs at least one entry".into()));
    }
    let mut entries = Vec::new();
    for (j, m) in raw.mix.iter().enumerate() {
        let mwhat = format!("{what}: mix[{j}]");
        let policy: Policy = m
            .policy
            .parse()
            .map_err(|e| ctx.invalid(span.clone(), format!("{mwhat}: policy"), e))?;
        if policy.class() == gang_core::Class::NoMux {
            return Err(ctx.invalid(
                span.clone(),
                format!("{mwhat}: policy"),
                "no-mux domains must be alone on their CPUs; write them as [[domain]] tables",
            ));
        }
        if m.weight == 0 {
            return Err(ctx.invalid(
                span.clone(),
                format!("{mwhat}: weight"),
                "must be at least 1",
            ));
        }
        let workload = workload_from_raw(ctx, &m.workload, span.clone(), &mwhat)?;
        entries.push((m.weight, policy, workload));
    }
    let total_weight: u64 = entries.iter().map(|e| u64::from(e.0)).sum();

    // Per-CPU loads: reserved utilisation in ppm, vCPU count.
    let slot = |cpu: CpuId| cpus.iter().position(|&c| c == cpu);
    let mut util = vec![0u64; cpus.len()];
    let mut count = vec![0u32; cpus.len()];
    for d in earlier {
        if let Some(map) = &d.cpu_map {
            for &c in map {
                if let Some(i) = slot(c) {
                    util[i] += util_ppm(&d.policy);
                    count[i] += 1;
                }
            }
        }
    }
    let cap_ppm = u64::from(raw.reserved_cap_pct) * 10_000;

    let seed =
        raw.seed.unwrap_or(scenario_seed) ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(index as u64 + 1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let width = raw.count.saturating_sub(1).to_string().len().max(3);
    let mut out = Vec::with_capacity(raw.count as usize);
    for i in 0..raw.count {
        let mut pick = rng.random_range(0..total_weight);
        let mut chosen = &entries[0];
        for e in &entries {
            if pick < u64::from(e.0) {
                chosen = e;
                break;
            }
            pick -= u64::from(e.0);
        }
        let (_, mut policy, workload) = *chosen;
        let vcpus = rng.random_range(lo..=hi) as usize;
        let mut order: Vec<usize> = (0..cpus.len()).collect();
        let u = util_ppm(&policy);
        if u > 0 {
            order.sort_by_key(|&c| (util[c], count[c], c));
            if order[..vcpus].iter().any(|&c| util[c] + u > cap_ppm) {
                policy = Policy::default();
            }
        }
        if policy.timing().is_none() {
            order.sort_by_key(|&c| (count[c], util[c], c));
        }
        let mut chosen_cpus: Vec<usize> = order[..vcpus].to_vec();
        chosen_cpus.sort_unstable();
        let u = util_ppm(&policy);
        for &c in &chosen_cpus {
            util[c] += u;
            count[c] += 1;
        }
        out.push(DomainDef {
            name: format!("{}{:0width$}", raw.prefix, i),
            vcpus: vcpus as u32,
            policy,
            cpu_map: Some(chosen_cpus.iter().map(|&c| cpus[c]).collect()),
            workload,
        });
    }
    Ok(out)
}

/// TT/ET utilisation in parts per million (0 for BE and no-mux).
fn util_ppm(p: &Policy) -> u64 {
    match p.timing() {
        Some(t) if t.period > 0 => (u128::from(t.active) * 1_000_000 / u128::from(t.period)) as u64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use crate::scenario::Scenario;

    const GEN: &str = r#"
duration = "1s"
seed = 7
[pool]
cpus = "0-7"
[[domain]]
name = "pinned"
vcpus = 2
policy = "tt,10ms,5ms"
cpus = "0-1"
[[generate]]
count = 40
prefix = "d"
vcpus = [1, 3]
reserved_cap_pct = 60
mix = [
  { weight = 2, policy = "tt,10ms,2ms", workload = { kind = "periodic", period = "10ms", exec = "1ms" } },
  { weight = 1, policy = "et,20ms,4ms", workload = { kind = "sleep-wake", run = "1ms", sleep = "5ms" } },
  { weight = 2, workload = { kind = "busy" } },
]
"#;

    #[test]
    fn generates_deterministically_under_the_cap() {
        let a = Scenario::parse("g.toml", GEN).unwrap();
        let b = Scenario::parse("g.toml", GEN).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.domains.len(), 41);
        assert_eq!(a.domains[1].name, "d000");
        assert_eq!(a.domains[40].name, "d039");
        let mut util = [0u64; 8];
        for d in &a.domains {
            let map = d.cpu_map.as_ref().unwrap();
            assert_eq!(map.len(), d.vcpus as usize);
            assert!((1..=3).contains(&d.vcpus) || d.name == "pinned");
            let mut sorted = map.clone();
            sorted.dedup();
            assert_eq!(sorted.len(), map.len());
            for &c in map {
                util[c as usize] += super::util_ppm(&d.policy);
            }
        }
        assert!(util.iter().all(|&u| u <= 600_000), "{util:?}");
        // The cap demoted some TT/ET domains; some stayed reserved.
        let reserved = a
            .domains
            .iter()
            .filter(|d| d.policy.timing().is_some())
            .count();
        assert!(reserved > 5 && reserved < 30, "{reserved}");
        // Another seed, another set.
        let c = Scenario::parse("g.toml", &GEN.replace("seed = 7", "seed = 8")).unwrap();
        assert_ne!(a.domains, c.domains);
    }

    #[test]
    fn generate_errors() {
        let e = |from: &str, to: &str| {
            assert!(GEN.contains(from));
            Scenario::parse("g.toml", &GEN.replacen(from, to, 1))
                .unwrap_err()
                .to_string()
        };
        assert!(e("vcpus = [1, 3]", "vcpus = [3, 1]").contains("generate #1: vcpus"));
        assert!(e("vcpus = [1, 3]", "vcpus = [1, 9]").contains("8 CPUs"));
        assert!(e("\"tt,10ms,2ms\"", "\"no\"").contains("generate #1: mix[0]: policy: no-mux"));
        assert!(e("\"et,20ms,4ms\"", "\"et,20\"").contains("mix[1]: policy"));
        assert!(e("weight = 1,", "weight = 0,").contains("mix[1]: weight"));
        assert!(e("run = \"1ms\"", "run = \"1\"x\"").starts_with("g.toml:"));
        assert!(e("sleep = \"5ms\"", "sleep = \"5 ms ago\"").contains("mix[1]: workload.sleep"));
        assert!(e("mix = [", "colour = 1\nmix = [").contains("colour"));
        assert!(e("reserved_cap_pct = 60", "reserved_cap_pct = 160").contains("reserved_cap_pct"));
        assert!(e("name = \"pinned\"", "name = \"d005\"").contains("\"d005\" clashes"));
        // A count that would not fit in memory is refused, not allocated.
        assert!(e("count = 40", "count = 4294967295").contains("generate #1: count"));
    }
}
