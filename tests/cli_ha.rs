//! `rsdb ha failover|switchover|agent` without servers: misconfiguration and an unreachable
//! etcd are clear errors with the documented exit codes. (The operations themselves are
//! specified by tests/ha_failover.rs.)

use std::process::Command;

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rsdb(args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rsdb"));
    c.args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ROOTSTREAM_")) {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn ha_commands_name_the_missing_configuration() {
    let (code, err) = rsdb(&["ha", "switchover", "--to", "p2"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ha_nodes"), "{err}");
    let nodes = format!(
        "p1=postgres://postgres@127.0.0.1:{}/x,p2=postgres://postgres@127.0.0.1:{}/x",
        closed_port(),
        closed_port()
    );
    let (code, err) = rsdb(&["ha", "failover"], &[("ROOTSTREAM_HA_NODES", nodes)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("etcd_endpoints"), "{err}");
}

#[test]
fn an_unreachable_etcd_is_a_connection_error_naming_it() {
    let nodes = format!(
        "p1=postgres://postgres@127.0.0.1:{}/x,p2=postgres://postgres@127.0.0.1:{}/x",
        closed_port(),
        closed_port()
    );
    let etcd = format!("http://127.0.0.1:{}", closed_port());
    let (code, err) = rsdb(
        &["ha", "switchover", "--to", "p2", "--options", r#"{"etcd_timeout_ms": 300}"#],
        &[("ROOTSTREAM_HA_NODES", nodes.clone()), ("ROOTSTREAM_ETCD_ENDPOINTS", etcd.clone())],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&etcd), "{err}");
    let (code, err) =
        rsdb(&["ha", "failover", "--to", "p9"], &[("ROOTSTREAM_HA_NODES", nodes), ("ROOTSTREAM_ETCD_ENDPOINTS", etcd)]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("p9"), "{err}");
}

mod ha_support;

#[test]
fn the_agent_takes_the_lease_and_gives_it_up_on_sigterm() {
    use rootstream_db::ha::etcd::EtcdClient;
    let s = ha_support::HaStack::start();
    let mut c = Command::new(env!("CARGO_BIN_EXE_rsdb"));
    c.args(["ha", "agent", "--options", r#"{"member": "cli-agent", "cluster": "cli"}"#])
        .env("ROOTSTREAM_HA_NODES", s.var("ROOTSTREAM_HA_PG_NODES"))
        .env("ROOTSTREAM_HA_DATA_DIRS", s.var("ROOTSTREAM_HA_PG_DATA"))
        .env("ROOTSTREAM_ETCD_ENDPOINTS", s.var("ROOTSTREAM_ETCD_ENDPOINTS"))
        .stderr(std::process::Stdio::inherit());
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Child(c.spawn().unwrap());
    let etcd = EtcdClient::new(s.etcd_endpoints(), std::time::Duration::from_secs(1)).unwrap();
    let key = "/rootstream/ha/cli/leader";
    let t = std::time::Instant::now();
    while etcd.get(key).unwrap().map(|kv| kv.value).as_deref() != Some("cli-agent") {
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "the agent did not take the lease");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let primary = loop {
        if let Some(kv) = etcd.get("/rootstream/ha/cli/primary").unwrap() {
            break kv.value;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "the agent did not record the primary");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(primary.contains("\"p1\""), "{primary}");
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(etcd.get(key).unwrap().is_none(), "the lease was not released");
}
