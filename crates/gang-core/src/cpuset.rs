//! Sets of CPU numbers, as a growable bitset, with xl's list syntax.
//!
//! A [`CpuSet`] is the core's currency for "which CPUs": pool CPU sets, the
//! union of a domain's CPU map, the CPUs taken in a decision. Operations are
//! word-parallel so that a decision on 1,024 CPUs stays cheap. Parsing follows
//! xl: comma-separated `N` or `N-M` items, each optionally prefixed by `^`
//! (exclude), or `all`; printing gives the shortest range list (`0-3,6`).

use std::fmt;

/// A CPU number (a host CPU id, as Linux numbers them).
pub type CpuId = u32;

/// A set of CPUs. Equality ignores trailing empty words.
#[derive(Default, Eq)]
pub struct CpuSet {
    words: Vec<u64>,
}

impl Clone for CpuSet {
    fn clone(&self) -> Self {
        CpuSet {
            words: self.words.clone(),
        }
    }

    /// Reuses this set's words: the engine copies sets on every decision
    /// (a dispatcher's real-time path), where an allocation is not wanted.
    fn clone_from(&mut self, source: &Self) {
        self.words.clone_from(&source.words);
    }
}

/// Why a CPU list was refused. Messages follow xl's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuListError {
    /// An item is not `N` or `N-M`, or the range is reversed.
    #[error("Invalid pcpu range: {0}.")]
    InvalidRange(String),
    /// `^` together with `all`.
    #[error("Can't combine \"^\" and \"all\".")]
    ExcludeAll,
    /// `all` was given where no universe is known.
    #[error("\"all\" is not allowed here")]
    AllWithoutUniverse,
    /// A CPU number above the supported maximum.
    #[error("cpu {0} is out of range (max {max})", max = CpuSet::MAX_CPU)]
    TooLarge(u64),
}

impl CpuSet {
    /// The largest CPU number a set may hold.
    pub const MAX_CPU: CpuId = 65_535;

    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// CPUs `0..n`.
    pub fn first_n(n: u32) -> Self {
        (0..n).collect()
    }

    /// Adds `cpu`; returns whether it was new.
    pub fn insert(&mut self, cpu: CpuId) -> bool {
        let (w, b) = (cpu as usize / 64, cpu % 64);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        let was = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        !was
    }

    /// Removes `cpu`; returns whether it was present.
    pub fn remove(&mut self, cpu: CpuId) -> bool {
        let (w, b) = (cpu as usize / 64, cpu % 64);
        match self.words.get_mut(w) {
            Some(word) if *word & (1 << b) != 0 => {
                *word &= !(1 << b);
                true
            }
            _ => false,
        }
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: CpuId) -> bool {
        self.words
            .get(cpu as usize / 64)
            .is_some_and(|w| w & (1 << (cpu % 64)) != 0)
    }

    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Whether the two sets share a CPU.
    pub fn intersects(&self, other: &CpuSet) -> bool {
        self.words.iter().zip(&other.words).any(|(a, b)| a & b != 0)
    }

    /// Whether every CPU of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.words
            .iter()
            .enumerate()
            .all(|(i, &w)| w & !other.words.get(i).copied().unwrap_or(0) == 0)
    }

    /// Adds every CPU of `other`.
    pub fn union_with(&mut self, other: &CpuSet) {
        if self.words.len() < other.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// Removes every CPU of `other`.
    pub fn difference_with(&mut self, other: &CpuSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !b;
        }
    }

    /// The CPUs in both sets.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet {
            words: self
                .words
                .iter()
                .zip(&other.words)
                .map(|(a, b)| a & b)
                .collect(),
        }
    }

    /// Removes every CPU.
    pub fn clear(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }

    /// The CPUs in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = CpuId> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut bits = w;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                Some(i as CpuId * 64 + b)
            })
        })
    }

    /// The lowest CPU, if any.
    pub fn first(&self) -> Option<CpuId> {
        self.iter().next()
    }

    /// Parses an xl CPU list. `universe` is what `all` means (`None`: `all`
    /// is refused). An item starting with `^` removes CPUs; a list made only
    /// of exclusions starts from the universe, as xl does.
    pub fn parse(list: &str, universe: Option<&CpuSet>) -> Result<CpuSet, CpuListError> {
        CpuList::parse(list)?.resolve(universe)
    }
}

/// An xl CPU list as written (`1,5,10-16,^13`, `all`, `^0`), before `all`
/// and a list of exclusions are given their meaning: the CPUs they stand
/// for (the host's, a pool's) are known where the list is applied, so a
/// client parses (and refuses bad syntax) and the daemon resolves.
/// Serialised as its text (parsed again when read, so a malformed list is
/// refused there); [`CpuList::default`] (no items, the empty text) is the
/// empty set.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CpuList {
    items: Vec<CpuListItem>,
}

/// One item of a [`CpuList`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuListItem {
    /// `all`: every CPU of the universe.
    All,
    /// `N` or `N-M`: these CPUs.
    Add {
        /// First CPU.
        first: CpuId,
        /// Last CPU (inclusive).
        last: CpuId,
    },
    /// `^N` or `^N-M`: not these CPUs.
    Remove {
        /// First CPU.
        first: CpuId,
        /// Last CPU (inclusive).
        last: CpuId,
    },
}

impl CpuList {
    /// Parses xl's syntax; only the syntax is checked here.
    pub fn parse(list: &str) -> Result<CpuList, CpuListError> {
        let mut items = Vec::new();
        for item in list.split(',').map(str::trim) {
            let (exclude, body) = match item.strip_prefix('^') {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            let body = body
                .strip_prefix("nodes:")
                .or_else(|| body.strip_prefix("node:"))
                .unwrap_or(body);
            if body == "all" {
                if exclude {
                    return Err(CpuListError::ExcludeAll);
                }
                items.push(CpuListItem::All);
                continue;
            }
            let (first, last) = match body.split_once('-') {
                Some((a, b)) => (parse_cpu(a, item)?, parse_cpu(b, item)?),
                None => {
                    let n = parse_cpu(body, item)?;
                    (n, n)
                }
            };
            if first > last {
                return Err(CpuListError::InvalidRange(item.to_string()));
            }
            items.push(if exclude {
                CpuListItem::Remove { first, last }
            } else {
                CpuListItem::Add { first, last }
            });
        }
        Ok(CpuList { items })
    }

    /// Exactly these CPUs.
    pub fn only(cpus: &CpuSet) -> CpuList {
        CpuList {
            items: cpus
                .iter()
                .map(|c| CpuListItem::Add { first: c, last: c })
                .collect(),
        }
    }

    /// The CPUs the list names, `universe` being what `all` means and where
    /// a list of exclusions starts (`None`: both are refused).
    pub fn resolve(&self, universe: Option<&CpuSet>) -> Result<CpuSet, CpuListError> {
        let only_exclusions = !self.items.is_empty()
            && self
                .items
                .iter()
                .all(|i| matches!(i, CpuListItem::Remove { .. }));
        let mut set = match (only_exclusions, universe) {
            (true, Some(u)) => u.clone(),
            _ => CpuSet::new(),
        };
        for item in &self.items {
            match *item {
                CpuListItem::All => {
                    set.union_with(universe.ok_or(CpuListError::AllWithoutUniverse)?);
                }
                CpuListItem::Add { first, last } => {
                    for cpu in first..=last {
                        set.insert(cpu);
                    }
                }
                CpuListItem::Remove { first, last } => {
                    for cpu in first..=last {
                        set.remove(cpu);
                    }
                }
            }
        }
        Ok(set)
    }

    /// Whether it names no CPU whatever the universe.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl TryFrom<String> for CpuList {
    type Error = CpuListError;
    fn try_from(text: String) -> Result<CpuList, CpuListError> {
        if text.is_empty() {
            return Ok(CpuList::default());
        }
        CpuList::parse(&text)
    }
}

impl From<CpuList> for String {
    fn from(list: CpuList) -> String {
        list.to_string()
    }
}

impl fmt::Display for CpuList {
    /// xl's syntax, item by item.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match *item {
                CpuListItem::All => f.write_str("all")?,
                CpuListItem::Add { first, last } if first == last => write!(f, "{first}")?,
                CpuListItem::Add { first, last } => write!(f, "{first}-{last}")?,
                CpuListItem::Remove { first, last } if first == last => write!(f, "^{first}")?,
                CpuListItem::Remove { first, last } => write!(f, "^{first}-{last}")?,
            }
        }
        Ok(())
    }
}

fn parse_cpu(text: &str, item: &str) -> Result<CpuId, CpuListError> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CpuListError::InvalidRange(item.to_string()));
    }
    let n: u64 = text.parse().map_err(|_| CpuListError::TooLarge(u64::MAX))?;
    if n > u64::from(CpuSet::MAX_CPU) {
        return Err(CpuListError::TooLarge(n));
    }
    Ok(n as CpuId)
}

impl PartialEq for CpuSet {
    fn eq(&self, other: &Self) -> bool {
        let n = self.words.len().max(other.words.len());
        (0..n).all(|i| {
            self.words.get(i).copied().unwrap_or(0) == other.words.get(i).copied().unwrap_or(0)
        })
    }
}

impl std::hash::Hash for CpuSet {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let end = self
            .words
            .iter()
            .rposition(|&w| w != 0)
            .map_or(0, |p| p + 1);
        self.words[..end].hash(state);
    }
}

impl FromIterator<CpuId> for CpuSet {
    fn from_iter<I: IntoIterator<Item = CpuId>>(iter: I) -> Self {
        let mut set = CpuSet::new();
        for cpu in iter {
            set.insert(cpu);
        }
        set
    }
}

impl fmt::Display for CpuSet {
    /// The shortest xl range list: `0-3,6`; the empty set prints as nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut iter = self.iter().peekable();
        let mut first = true;
        while let Some(lo) = iter.next() {
            let mut hi = lo;
            while iter.peek() == Some(&(hi + 1)) {
                hi += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({self})")
    }
}

impl serde::Serialize for CpuSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for CpuSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<CpuId>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xl_lists() {
        let s = CpuSet::parse("1,5,10-16,^13", None).unwrap();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![1, 5, 10, 11, 12, 14, 15, 16]
        );
        assert_eq!(s.to_string(), "1,5,10-12,14-16");
        let all = CpuSet::first_n(4);
        assert_eq!(CpuSet::parse("all", Some(&all)).unwrap(), all);
        assert_eq!(CpuSet::parse("^0", Some(&all)).unwrap().to_string(), "1-3");
        assert_eq!(CpuSet::parse("node:2", None).unwrap().to_string(), "2");
    }

    #[test]
    fn refuses_bad_lists_with_xl_messages() {
        assert_eq!(
            CpuSet::parse("3-1", None).unwrap_err().to_string(),
            "Invalid pcpu range: 3-1."
        );
        assert_eq!(
            CpuSet::parse("x", None).unwrap_err(),
            CpuListError::InvalidRange("x".into())
        );
        assert_eq!(
            CpuSet::parse("", None).unwrap_err(),
            CpuListError::InvalidRange("".into())
        );
        assert_eq!(
            CpuSet::parse("^all", Some(&CpuSet::first_n(2))).unwrap_err(),
            CpuListError::ExcludeAll
        );
        assert_eq!(
            CpuSet::parse("all", None).unwrap_err(),
            CpuListError::AllWithoutUniverse
        );
        assert_eq!(
            CpuSet::parse("70000", None).unwrap_err(),
            CpuListError::TooLarge(70000)
        );
    }

    #[test]
    fn set_algebra() {
        let a: CpuSet = [0, 1, 64, 130].into_iter().collect();
        let b: CpuSet = [1, 130].into_iter().collect();
        assert!(b.is_subset(&a));
        assert!(!a.is_subset(&b));
        assert!(a.intersects(&b));
        let mut c = a.clone();
        c.difference_with(&b);
        assert_eq!(c.to_string(), "0,64");
        assert_eq!(a.len(), 4);
        assert_eq!(a.intersection(&b), b);
        let mut d = CpuSet::new();
        d.insert(200);
        d.remove(200);
        assert_eq!(d, CpuSet::new());
    }

    #[test]
    fn a_list_is_parsed_where_it_is_written_and_resolved_where_cpus_are_known() {
        let host = CpuSet::parse("0-7", None).unwrap();
        let pool = CpuSet::parse("2-3", None).unwrap();
        let excl = CpuList::parse("^1").unwrap();
        assert_eq!(excl.resolve(Some(&host)).unwrap().to_string(), "0,2-7");
        assert_eq!(excl.resolve(Some(&pool)).unwrap().to_string(), "2-3");
        let all = CpuList::parse("all,^3").unwrap();
        assert_eq!(all.resolve(Some(&pool)).unwrap().to_string(), "2");
        assert_eq!(all.resolve(None), Err(CpuListError::AllWithoutUniverse));
        assert_eq!(
            CpuList::default().resolve(Some(&host)).unwrap(),
            CpuSet::new()
        );
        assert_eq!(
            CpuList::parse("3-1"),
            Err(CpuListError::InvalidRange("3-1".into()))
        );
        // On the wire it is its text, read back through the parser.
        let json = serde_json::to_string(&CpuList::parse("1,5,10-16,^13").unwrap()).unwrap();
        assert_eq!(json, "\"1,5,10-16,^13\"");
        assert!(serde_json::from_str::<CpuList>("\"3-1\"").is_err());
        assert_eq!(
            serde_json::from_str::<CpuList>("\"\"").unwrap(),
            CpuList::default()
        );
    }

    proptest::proptest! {
        #[test]
        fn a_list_reads_back_from_its_text_and_names_what_the_old_parser_named(
            items in proptest::collection::vec(
                (0u8..3, 0u32..70, 0u32..6),
                1..6,
            ),
            universe in proptest::collection::btree_set(0u32..70, 0..20),
        ) {
            let text = items
                .iter()
                .map(|&(kind, first, len)| match kind {
                    0 => "all".to_string(),
                    1 => format!("{first}-{}", first + len),
                    _ => format!("^{first}-{}", first + len),
                })
                .collect::<Vec<_>>()
                .join(",");
            let list = CpuList::parse(&text).unwrap();
            let again = CpuList::parse(&list.to_string()).unwrap();
            proptest::prop_assert_eq!(&again, &list);
            let universe: CpuSet = universe.into_iter().collect();
            let resolved = list.resolve(Some(&universe)).unwrap();
            // The items applied in order, by hand.
            let only_exclusions = items.iter().all(|&(k, _, _)| k == 2);
            let mut expect = if only_exclusions { universe.clone() } else { CpuSet::new() };
            for &(kind, first, len) in &items {
                for cpu in first..=first + len {
                    match kind {
                        0 => {}
                        1 => { expect.insert(cpu); }
                        _ => { expect.remove(cpu); }
                    }
                }
                if kind == 0 {
                    expect.union_with(&universe);
                }
            }
            proptest::prop_assert_eq!(resolved, expect);
        }
    }

    #[test]
    fn clone_from_keeps_the_allocation() {
        let big: CpuSet = (0..512).collect();
        let mut into: CpuSet = (0..1000).collect();
        let before = into.words.as_ptr();
        into.clone_from(&big);
        assert_eq!(into, big);
        assert_eq!(into.words.as_ptr(), before, "reused, not reallocated");
    }
}
