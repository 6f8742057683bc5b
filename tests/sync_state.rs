//! The entity store's conflict resolution, without servers: convergence in any order, clocks
//! that run wrong, version-vector merges and recorded conflicts.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rootstream_db::sync::{
    Change, ChangeBody, EntityStore, HybridClock, MergeFn, Outcome, PhysicalClock, Strategy, SystemClock,
};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

fn store(strategy: Strategy) -> EntityStore {
    let mut s = EntityStore::new();
    s.register_type("stream", strategy).unwrap();
    s
}

struct Fixed(AtomicU64);
impl PhysicalClock for Fixed {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn random_delta(rng: &mut StdRng) -> Map<String, Value> {
    let mut d = Map::new();
    for _ in 0..rng.random_range(1..4) {
        let field = format!("f{}", rng.random_range(0..5));
        let value = if rng.random_bool(0.15) { Value::Null } else { json!(rng.random_range(0..1000)) };
        d.insert(field, value);
    }
    d
}

// Three instances make random changes; every instance then applies every change (its own
// included, duplicated) in its own random order.
fn converge(strategy: Strategy, merge: Option<MergeFn>) -> Vec<(EntityStore, usize)> {
    let mut rng = StdRng::seed_from_u64(7);
    let clocks: Vec<HybridClock> = ["a", "b", "c"].iter().map(|i| HybridClock::new(i)).collect();
    let mut makers: Vec<EntityStore> = (0..3).map(|_| store(strategy)).collect();
    let mut changes: Vec<Change> = Vec::new();
    for step in 0..3000 {
        let who = rng.random_range(0..3);
        let id = format!("s{}", rng.random_range(0..20));
        let (change, _) = makers[who].local_change(&clocks[who], "stream", &id, &random_delta(&mut rng)).unwrap();
        // Now and then an instance hears about others' changes (so some are causal, not all
        // concurrent).
        if step % 7 == 0 {
            for (i, m) in makers.iter_mut().enumerate() {
                if i != who {
                    m.apply(&change).unwrap();
                    clocks[i].observe(&change.hlc).unwrap();
                }
            }
        }
        changes.push(change);
    }
    (0..3)
        .map(|_| {
            let mut s = store(strategy);
            if let Some(m) = &merge {
                s.set_merge("stream", Some(m.clone())).unwrap();
            }
            let mut order = changes.clone();
            order.extend(changes.iter().take(500).cloned());
            order.shuffle(&mut rng);
            let mut conflicts = 0;
            for c in &order {
                conflicts += usize::from(matches!(s.apply(c).unwrap(), Outcome::Conflict(_)));
            }
            (s, conflicts)
        })
        .collect()
}

#[test]
fn last_writer_wins_converges_whatever_the_order_and_however_often_a_change_arrives() {
    let stores = converge(Strategy::LastWriterWins, None);
    let first = stores[0].0.image().visible();
    assert_eq!(first.get("stream").map(|m| m.len()), Some(20));
    for (s, conflicts) in &stores {
        assert_eq!(s.image().visible(), first);
        assert_eq!(s.image(), stores[0].0.image(), "tombstones and timestamps agree too");
        assert_eq!(*conflicts, 0, "last writer wins has no conflicts to report");
    }
}

#[test]
fn version_vectors_with_a_merge_converge_whatever_the_order() {
    // Field-wise union preferring the newer state: depends only on its arguments.
    let merge: MergeFn = Arc::new(|r| {
        let mut out = r.older.clone();
        for (k, v) in r.newer {
            out.insert(k.clone(), v.clone());
        }
        Ok(out)
    });
    let stores = converge(Strategy::VersionVectors, Some(merge));
    for (s, conflicts) in &stores {
        assert_eq!(s.image(), stores[0].0.image());
        assert_eq!(*conflicts, 0, "the merge resolved every concurrent pair");
    }
}

#[test]
fn version_vectors_without_a_merge_converge_on_the_latest_state_and_report_conflicts() {
    let stores = converge(Strategy::VersionVectors, None);
    for (s, conflicts) in &stores {
        assert_eq!(s.image(), stores[0].0.image());
        assert!(*conflicts > 0, "concurrent changes were reported");
    }
}

#[test]
fn a_later_write_replaces_a_field_an_older_one_arriving_late_does_not() {
    let clock = HybridClock::new("a");
    let mut maker = store(Strategy::LastWriterWins);
    let (old, _) = maker.local_change(&clock, "stream", "1", &obj(json!({"title": "old", "viewers": 1}))).unwrap();
    let (new, _) = maker.local_change(&clock, "stream", "1", &obj(json!({"title": "new"}))).unwrap();
    let mut other = store(Strategy::LastWriterWins);
    assert_eq!(other.apply(&new).unwrap(), Outcome::Applied { fields: vec!["title".into()] });
    assert_eq!(other.apply(&old).unwrap(), Outcome::Applied { fields: vec!["viewers".into()] });
    assert_eq!(other.snapshot("stream", "1").unwrap(), Some(obj(json!({"title": "new", "viewers": 1}))));
    assert_eq!(other.apply(&new).unwrap(), Outcome::Unchanged, "a duplicate changes nothing");
}

#[test]
fn a_deleted_field_stays_deleted_when_an_older_write_arrives_after_the_deletion() {
    let clock = HybridClock::new("a");
    let mut maker = store(Strategy::LastWriterWins);
    let (set, _) = maker.local_change(&clock, "stream", "1", &obj(json!({"game": "chess"}))).unwrap();
    let (del, _) = maker.local_change(&clock, "stream", "1", &obj(json!({"game": null}))).unwrap();
    let mut other = store(Strategy::LastWriterWins);
    other.apply(&del).unwrap();
    assert_eq!(other.apply(&set).unwrap(), Outcome::Unchanged);
    assert_eq!(other.snapshot("stream", "1").unwrap(), Some(Map::new()));
    assert_eq!(maker.snapshot("stream", "1").unwrap(), Some(Map::new()));
}

#[test]
fn a_clock_ten_seconds_ahead_wins_only_until_the_others_have_seen_its_write() {
    let now = SystemClock::default().now_ms();
    let fast = HybridClock::with_physical("fast", Arc::new(SystemClock { offset_ms: 10_000 }), 60_000);
    let honest = HybridClock::with_physical("honest", Arc::new(Fixed(AtomicU64::new(now))), 60_000);
    let mut a = store(Strategy::LastWriterWins);
    let mut b = store(Strategy::LastWriterWins);
    let (from_fast, _) = a.local_change(&fast, "stream", "1", &obj(json!({"title": "fast"}))).unwrap();
    // Made later in real time but without having seen the fast write: the fast one wins
    // (this is the window the skew opens, at most the skew itself).
    let (concurrent, _) = b.local_change(&honest, "stream", "1", &obj(json!({"title": "honest 1"}))).unwrap();
    b.apply(&from_fast).unwrap();
    honest.observe(&from_fast.hlc).unwrap();
    a.apply(&concurrent).unwrap();
    assert_eq!(b.snapshot("stream", "1").unwrap(), Some(obj(json!({"title": "fast"}))));
    // Once the honest instance has seen the fast write, its next write wins everywhere, even
    // though its wall clock is still 10 s behind.
    let (after, _) = b.local_change(&honest, "stream", "1", &obj(json!({"title": "honest 2"}))).unwrap();
    a.apply(&after).unwrap();
    assert!(after.hlc > from_fast.hlc);
    for s in [&a, &b] {
        assert_eq!(s.snapshot("stream", "1").unwrap(), Some(obj(json!({"title": "honest 2"}))));
    }
}

#[test]
fn a_clock_ten_seconds_behind_still_has_its_later_writes_accepted() {
    let ahead = HybridClock::new("ahead");
    let slow = HybridClock::with_physical("slow", Arc::new(SystemClock { offset_ms: -10_000 }), 60_000);
    let mut a = store(Strategy::LastWriterWins);
    let mut b = store(Strategy::LastWriterWins);
    let (first, _) = a.local_change(&ahead, "stream", "1", &obj(json!({"viewers": 10}))).unwrap();
    b.apply(&first).unwrap();
    slow.observe(&first.hlc).unwrap();
    let (reply, _) = b.local_change(&slow, "stream", "1", &obj(json!({"viewers": 11}))).unwrap();
    assert_eq!(a.apply(&reply).unwrap(), Outcome::Applied { fields: vec!["viewers".into()] });
    assert_eq!(a.snapshot("stream", "1").unwrap(), Some(obj(json!({"viewers": 11}))));
}

#[test]
fn equal_timestamps_from_two_instances_tie_break_by_instance_id() {
    let t = Arc::new(Fixed(AtomicU64::new(1_000_000)));
    let a = HybridClock::with_physical("a", t.clone(), 60_000);
    let b = HybridClock::with_physical("b", t, 60_000);
    let mut sa = store(Strategy::LastWriterWins);
    let mut sb = store(Strategy::LastWriterWins);
    let (ca, _) = sa.local_change(&a, "stream", "1", &obj(json!({"title": "from a"}))).unwrap();
    let (cb, _) = sb.local_change(&b, "stream", "1", &obj(json!({"title": "from b"}))).unwrap();
    assert_eq!((ca.hlc.wall_ms, ca.hlc.logical), (cb.hlc.wall_ms, cb.hlc.logical));
    sa.apply(&cb).unwrap();
    sb.apply(&ca).unwrap();
    for s in [&sa, &sb] {
        assert_eq!(s.snapshot("stream", "1").unwrap(), Some(obj(json!({"title": "from b"}))));
    }
}

#[test]
fn concurrent_version_vector_updates_call_the_merge_with_the_older_state_first() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let merge: MergeFn = Arc::new(move |r| {
        log.lock().unwrap().push((r.older.clone(), r.newer.clone()));
        let mut out = r.older.clone();
        let a = r.older.get("viewers").and_then(Value::as_i64).unwrap_or(0);
        let b = r.newer.get("viewers").and_then(Value::as_i64).unwrap_or(0);
        out.insert("viewers".into(), json!(a.max(b)));
        Ok(out)
    });
    let (ca, cb) = (HybridClock::new("a"), HybridClock::new("b"));
    let mut a = store(Strategy::VersionVectors);
    let mut b = store(Strategy::VersionVectors);
    a.set_merge("stream", Some(merge.clone())).unwrap();
    b.set_merge("stream", Some(merge)).unwrap();
    let (base, _) = a.local_change(&ca, "stream", "1", &obj(json!({"viewers": 1}))).unwrap();
    b.apply(&base).unwrap();
    let (xa, _) = a.local_change(&ca, "stream", "1", &obj(json!({"viewers": 5}))).unwrap();
    let (xb, _) = b.local_change(&cb, "stream", "1", &obj(json!({"viewers": 3}))).unwrap();
    assert_eq!(a.apply(&xb).unwrap(), Outcome::Merged);
    assert_eq!(b.apply(&xa).unwrap(), Outcome::Merged);
    for s in [&a, &b] {
        assert_eq!(s.snapshot("stream", "1").unwrap(), Some(obj(json!({"viewers": 5}))));
    }
    let calls = seen.lock().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0], calls[1], "both instances called merge with the same arguments");
}

#[test]
fn concurrent_updates_without_a_merge_are_returned_as_a_conflict_and_sequential_ones_never_are() {
    let (ca, cb) = (HybridClock::new("a"), HybridClock::new("b"));
    let mut a = store(Strategy::VersionVectors);
    let mut b = store(Strategy::VersionVectors);
    // Sequential: each instance sees the other's change before making its own.
    for i in 0..50 {
        let (maker, other, clock) = if i % 2 == 0 { (&mut a, &mut b, &ca) } else { (&mut b, &mut a, &cb) };
        let (c, _) = maker.local_change(clock, "stream", "1", &obj(json!({"n": i}))).unwrap();
        assert!(matches!(other.apply(&c).unwrap(), Outcome::Applied { .. }), "step {i}");
    }
    let (xa, _) = a.local_change(&ca, "stream", "1", &obj(json!({"title": "a"}))).unwrap();
    let (xb, _) = b.local_change(&cb, "stream", "1", &obj(json!({"title": "b"}))).unwrap();
    let Outcome::Conflict(on_a) = a.apply(&xb).unwrap() else { panic!("expected a conflict") };
    let Outcome::Conflict(on_b) = b.apply(&xa).unwrap() else { panic!("expected a conflict") };
    assert_eq!(on_a, on_b, "both instances record the same conflict");
    assert_eq!(on_a.kept.get("title"), Some(&json!("b")), "the later write is kept");
    assert_eq!(on_a.lost[0].state.get("title"), Some(&json!("a")), "and the other is reported, not dropped");
    assert!(on_a.reason.contains("no merge function"));
    assert_eq!(a.snapshot("stream", "1").unwrap(), b.snapshot("stream", "1").unwrap());
    // After the conflict both have seen both: the next change is sequential again.
    let (next, _) = a.local_change(&ca, "stream", "1", &obj(json!({"title": "c"}))).unwrap();
    assert!(matches!(b.apply(&next).unwrap(), Outcome::Applied { .. }));
}

#[test]
fn a_failing_merge_is_reported_as_a_conflict_with_its_error() {
    let merge: MergeFn = Arc::new(|_| Err(rootstream_db::Error::InvalidArgument("cannot merge".into())));
    let (ca, cb) = (HybridClock::new("a"), HybridClock::new("b"));
    let mut a = store(Strategy::VersionVectors);
    a.set_merge("stream", Some(merge)).unwrap();
    let mut b = store(Strategy::VersionVectors);
    a.local_change(&ca, "stream", "1", &obj(json!({"x": 1}))).unwrap();
    let (xb, _) = b.local_change(&cb, "stream", "1", &obj(json!({"x": 2}))).unwrap();
    let Outcome::Conflict(c) = a.apply(&xb).unwrap() else { panic!("expected a conflict") };
    assert!(c.reason.contains("cannot merge"), "{}", c.reason);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let clock = HybridClock::new("a");
    let mut s = store(Strategy::LastWriterWins);
    let err = s.local_change(&clock, "planet", "1", &obj(json!({"x": 1}))).unwrap_err();
    assert!(err.to_string().contains("unknown entity type"), "{err}");
    assert!(s.local_change(&clock, "stream", "", &obj(json!({"x": 1}))).is_err());
    assert!(s.local_change(&clock, "stream", "1", &obj(json!({"": 1}))).is_err());
    assert!(rootstream_db::sync::state::parse_delta("[1,2]").unwrap_err().to_string().contains("object"));
    assert!(rootstream_db::sync::state::parse_delta("{nope").is_err());
    let big = format!("{{\"x\":\"{}\"}}", "y".repeat(rootstream_db::sync::state::MAX_DELTA_BYTES));
    assert!(rootstream_db::sync::state::parse_delta(&big).unwrap_err().to_string().contains("limit"));
    // A change whose body does not fit the type's strategy.
    let wrong = Change {
        entity_type: "stream".into(),
        id: "1".into(),
        hlc: clock.now(),
        body: ChangeBody::State { state: Map::new(), vv: Default::default() },
    };
    assert!(s.apply(&wrong).is_err());
    assert_eq!(s.image().entity_count(), 0);
    assert!(s.set_merge("stream", None).is_err(), "last-writer-wins types take no merge");
    assert!(s.register_type("stream", Strategy::VersionVectors).is_err());
}

#[test]
fn a_change_survives_its_json_form() {
    let clock = HybridClock::new("a");
    let mut s = store(Strategy::VersionVectors);
    let (c, _) = s.local_change(&clock, "stream", "9", &obj(json!({"x": [1, 2]}))).unwrap();
    let text = serde_json::to_string(&c).unwrap();
    assert!(text.contains("\"strategy\":\"vv\""), "{text}");
    let back: Change = serde_json::from_str(&text).unwrap();
    assert_eq!(back, c);
}
