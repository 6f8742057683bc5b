//! The etcd client and the leader lease against a real three-member etcd (the HA stack's),
//! including a killed member and a lost quorum; and the errors of an unreachable etcd.

mod ha_support;

use ha_support::HaStack;
use rootstream_db::ha::etcd::EtcdClient;
use rootstream_db::ha::failover::FailoverManager;
use rootstream_db::ha::LeaderLease;
use rootstream_db::{Config, Error};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn client(s: &HaStack) -> Arc<EtcdClient> {
    Arc::new(EtcdClient::new(s.etcd_endpoints(), Duration::from_millis(700)).unwrap())
}

fn lease(c: &Arc<EtcdClient>, who: &str) -> LeaderLease {
    LeaderLease::new(c.clone(), "/rootstream/ha/lease-test/leader", who, Duration::from_secs(2), Duration::from_secs(1))
        .unwrap()
}

#[test]
fn the_lease_is_exclusive_expires_is_taken_over_and_survives_one_member_but_not_a_lost_quorum() {
    let s = HaStack::start();
    let c = client(&s);

    // Keys, values and guarded writes round-trip.
    c.put("/t/a", "1", 0).unwrap();
    assert_eq!(c.get("/t/a").unwrap().unwrap().value, "1");
    assert!(!c.put_if_equal("/t/a", "2", "/t/b", "x").unwrap());
    assert!(c.put_if_equal("/t/a", "1", "/t/b", "x").unwrap());
    assert_eq!(c.get_prefix("/t/").unwrap().len(), 2);
    assert!(c.delete_if_equal("/t/b", "x").unwrap());
    assert!(c.get("/t/b").unwrap().is_none());

    // Exclusive: only one of two holders gets it.
    let a = lease(&c, "a");
    let b = lease(&c, "b");
    assert!(a.acquire().unwrap());
    assert!(!b.acquire().unwrap());
    assert!(a.holds() && !b.holds());
    assert_eq!(b.current_leader().unwrap().as_deref(), Some("a"));
    a.renew().unwrap();
    assert!(a.verify().unwrap());

    // Release: the other takes it at once.
    a.release().unwrap();
    assert!(!a.holds());
    assert!(b.acquire().unwrap());

    // Expiry: b stops renewing; its claim ends before etcd's TTL, and a takes over after it.
    let t = Instant::now();
    while b.holds() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let local_end = t.elapsed();
    while !a.acquire().unwrap() {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("b stopped counting as holder after {local_end:?}; a took over after {:?}", t.elapsed());
    assert!(local_end < Duration::from_secs(2));
    assert!(matches!(b.renew(), Err(Error::Fenced(_))), "b's lease is gone");

    // One member killed: still works.
    let killed = s.cmd("etcd-kill", &["leader"]);
    s.cmd("etcd-wait", &["15"]);
    let t = Instant::now();
    while a.renew().is_err() {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(100));
    }
    a.acquire().unwrap();
    assert!(a.holds());
    println!("after killing etcd {killed}, the lease renewed again within {:?}", t.elapsed());

    // Quorum lost (two of three down): renewals fail, the claim ends before the TTL would,
    // and nobody can acquire.
    let others: Vec<&str> = ["e1", "e2", "e3"].into_iter().filter(|e| *e != killed).collect();
    s.cmd("etcd-kill", &[others[0]]);
    let lost = Instant::now();
    let mut renew_error = None;
    while a.holds() {
        if let Err(e) = a.renew() {
            renew_error = Some(e);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone = lost.elapsed();
    println!("quorum lost: holds() false after {gone:?}; renew said {renew_error:?}");
    assert!(gone < Duration::from_secs(2) + Duration::from_millis(700), "{gone:?}");
    let e = lease(&c, "c").acquire().unwrap_err();
    println!("acquire without quorum: {e}");
    assert!(matches!(e, Error::Timeout(_) | Error::Connection(_)), "{e}");
    assert!(e.to_string().contains("etcd"), "{e}");
}

#[test]
fn an_unreachable_etcd_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ep = format!("http://127.0.0.1:{port}");
    let c = Arc::new(EtcdClient::new(vec![ep.clone()], Duration::from_millis(300)).unwrap());
    let l = LeaderLease::new(c, "/k", "me", Duration::from_secs(2), Duration::from_secs(1)).unwrap();
    let e = l.acquire().unwrap_err();
    assert!(matches!(e, Error::Connection(_)), "{e}");
    assert!(e.to_string().contains(&ep), "{e}");
    assert!(!l.holds());

    // The manager reports it in its status and refuses manual operations with the reason.
    let mut cfg = Config::default();
    cfg.set("ha_nodes", "p1=postgres://postgres@127.0.0.1:1/x,p2=postgres://postgres@127.0.0.1:2/x").unwrap();
    cfg.set("etcd_endpoints", &ep).unwrap();
    let m = FailoverManager::open(&cfg, Some(r#"{"etcd_timeout_ms": 300, "lease_ttl_ms": 2000}"#)).unwrap();
    m.tick();
    let st = m.status();
    assert_eq!(st["is_leader"], false);
    assert!(st["last_error"].as_str().unwrap().contains(&ep), "{st}");
    assert_eq!(m.recent_alerts()[0].kind, "etcd_unavailable");
    let e = m.switchover("p2").unwrap_err();
    assert!(e.to_string().contains("etcd"), "{e}");
    // Misconfiguration is refused up front.
    let mut bad = cfg.clone();
    bad.etcd_endpoints.clear();
    assert!(FailoverManager::open(&bad, None).unwrap_err().to_string().contains("etcd_endpoints"));
    assert!(FailoverManager::open(&cfg, Some(r#"{"lease_ttl_ms": 500}"#)).is_err());
    assert!(FailoverManager::open(&cfg, Some("{nope")).is_err());
}
