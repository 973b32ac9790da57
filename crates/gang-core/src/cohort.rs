//! Cohorts: groups of domains linked by overlapping CPU maps.
//!
//! Two domains whose CPU maps share a CPU are in the same cohort, and so,
//! transitively, is every domain linked to them. Cohorts are scheduled
//! independently: no decision in one cohort depends on another, so each can be
//! decided (and replicated) on its own, and the tables stay as small as the
//! groups of domains that really interact.
//!
//! Invariants of [`partition`]: every input index is in exactly one cohort;
//! cohorts' CPU sets are pairwise disjoint; cohorts are ordered by their lowest
//! CPU and members by input order, so the result is deterministic.

use crate::cpuset::CpuSet;

/// A cohort: member indices (into the slice given to [`partition`]) and the
/// union of their CPU sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    /// Indices of the member domains, ascending.
    pub members: Vec<usize>,
    /// Union of the members' CPUs.
    pub cpus: CpuSet,
}

/// Partitions domains, given by their CPU sets, into cohorts. Domains with an
/// empty CPU set are left out.
pub fn partition(masks: &[&CpuSet]) -> Vec<Cohort> {
    let mut parent: Vec<usize> = (0..masks.len()).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    // Link each domain to the first domain seen on each of its CPUs.
    let mut owner_of_cpu: std::collections::BTreeMap<u32, usize> = Default::default();
    for (i, mask) in masks.iter().enumerate() {
        for cpu in mask.iter() {
            match owner_of_cpu.get(&cpu) {
                Some(&j) => {
                    let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                    if ri != rj {
                        parent[ri.max(rj)] = ri.min(rj);
                    }
                }
                None => {
                    owner_of_cpu.insert(cpu, i);
                }
            }
        }
    }
    let mut by_root: std::collections::BTreeMap<usize, Cohort> = Default::default();
    for (i, mask) in masks.iter().enumerate() {
        if mask.is_empty() {
            continue;
        }
        let root = find(&mut parent, i);
        let cohort = by_root.entry(root).or_insert_with(|| Cohort {
            members: Vec::new(),
            cpus: CpuSet::new(),
        });
        cohort.members.push(i);
        cohort.cpus.union_with(mask);
    }
    let mut cohorts: Vec<Cohort> = by_root.into_values().collect();
    cohorts.sort_by_key(|c| c.cpus.first());
    cohorts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &str) -> CpuSet {
        CpuSet::parse(list, None).unwrap()
    }

    #[test]
    fn links_transitively_and_keeps_disjoint_groups_apart() {
        let masks = [set("0-1"), set("4-5"), set("1-2"), set("2-3"), set("6")];
        let refs: Vec<&CpuSet> = masks.iter().collect();
        let cohorts = partition(&refs);
        assert_eq!(cohorts.len(), 3);
        assert_eq!(cohorts[0].members, vec![0, 2, 3]);
        assert_eq!(cohorts[0].cpus, set("0-3"));
        assert_eq!(cohorts[1].members, vec![1]);
        assert_eq!(cohorts[2].members, vec![4]);
    }

    #[test]
    fn skips_empty_masks() {
        let masks = [CpuSet::new(), set("3")];
        let refs: Vec<&CpuSet> = masks.iter().collect();
        let cohorts = partition(&refs);
        assert_eq!(cohorts.len(), 1);
        assert_eq!(cohorts[0].members, vec![1]);
    }
}
