//! The HA node primitives against a real PostgreSQL: probing a primary and an unreachable node.
//! Replicated clusters (`stack.sh --pg-ha`) are exercised in the replication and failover tests.

use rootstream_db::ha::node::{probe, NodeSet};
use std::time::Duration;

fn primary_url() -> String {
    std::env::var("ROOTSTREAM_DATABASE_URL").expect("run inside scripts/stack.sh")
}

#[tokio::test]
async fn a_primary_reports_its_role_position_and_timeline() {
    let set = NodeSet::parse(&format!("p1={}", primary_url()), None).unwrap();
    let s = probe(set.get("p1").unwrap(), Duration::from_secs(5)).await;
    assert!(s.reachable, "{s:?}");
    assert!(s.is_primary());
    assert!(s.lsn.unwrap().0 > 0);
    assert_eq!(s.timeline, Some(1));
    assert_eq!(s.streaming, None);
    assert!(s.latency_ms.unwrap() >= 0.0);
}

#[tokio::test]
async fn an_unreachable_node_is_reported_down_within_the_limit() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let set = NodeSet::parse(&format!("p9=postgres://postgres@127.0.0.1:{port}/x"), None).unwrap();
    let started = std::time::Instant::now();
    let s = probe(set.get("p9").unwrap(), Duration::from_secs(2)).await;
    assert!(!s.reachable);
    assert!(s.error.as_deref().unwrap().contains("p9"), "{s:?}");
    println!("down in {:?}", started.elapsed());
}
