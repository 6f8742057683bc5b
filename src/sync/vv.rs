//! Version vectors: one counter per instance that has changed an entity. Comparing two tells
//! whether one update has seen the other (and may replace it) or whether they were made
//! concurrently, without either knowing of the other — the case a merge function resolves.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How two version vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// The same history.
    Equal,
    /// The left one is strictly older: the right one has seen all of it and more.
    Before,
    /// The left one is strictly newer.
    After,
    /// Neither has seen all of the other.
    Concurrent,
}

/// Instance id → number of changes that instance has made to the entity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<String, u64>);

impl VersionVector {
    /// The empty vector: before every change.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter of one instance (0 when it never changed the entity).
    pub fn get(&self, instance: &str) -> u64 {
        self.0.get(instance).copied().unwrap_or(0)
    }

    /// Counts one more change by `instance` and returns its new counter.
    pub fn increment(&mut self, instance: &str) -> u64 {
        let c = self.0.entry(instance.to_string()).or_insert(0);
        *c += 1;
        *c
    }

    /// Raises every counter to the other vector's where that is higher (the join).
    pub fn merge(&mut self, other: &VersionVector) {
        for (instance, &n) in &other.0 {
            let c = self.0.entry(instance.clone()).or_insert(0);
            *c = (*c).max(n);
        }
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let mut less = false;
        let mut greater = false;
        for instance in self.0.keys().chain(other.0.keys()) {
            let (a, b) = (self.get(instance), other.get(instance));
            less |= a < b;
            greater |= a > b;
        }
        match (less, greater) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (true, true) => Causality::Concurrent,
        }
    }

    /// The counters, by instance.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(k, &v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        VersionVector(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    #[test]
    fn sequential_changes_are_ordered_and_concurrent_ones_are_detected() {
        let mut a = VersionVector::new();
        a.increment("a");
        let mut b = a.clone();
        b.increment("b");
        assert_eq!(a.compare(&b), Causality::Before);
        assert_eq!(b.compare(&a), Causality::After);
        assert_eq!(b.compare(&b.clone()), Causality::Equal);
        a.increment("a");
        assert_eq!(a.compare(&b), Causality::Concurrent);
        assert_eq!(b.compare(&a), Causality::Concurrent);
    }

    #[test]
    fn merge_takes_the_larger_counter_of_each_instance() {
        let mut x = vv(&[("a", 3), ("b", 1)]);
        x.merge(&vv(&[("b", 4), ("c", 2)]));
        assert_eq!(x, vv(&[("a", 3), ("b", 4), ("c", 2)]));
        assert_eq!(vv(&[("a", 3)]).compare(&x), Causality::Before);
    }

    #[test]
    fn a_missing_instance_counts_as_zero() {
        assert_eq!(vv(&[("a", 0)]).compare(&VersionVector::new()), Causality::Equal);
        assert_eq!(serde_json::to_string(&vv(&[("a", 2)])).unwrap(), r#"{"a":2}"#);
    }
}
