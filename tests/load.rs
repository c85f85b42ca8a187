//! Load (issue 7): 200 containers started and stopped concurrently through real hook
//! invocations (one nethook process each), on one network and over four. No duplicate address,
//! no lost lease, and after the stop no leftover link, nftables element, record, lease, lock or
//! process; each run bounded in time. The timings go to stderr (`--nocapture`).

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const N: usize = 200;
const BOUND: Duration = Duration::from_secs(120);

/// Start one hook process per state, all at once; wait for all; return the failures.
fn hooks_at_once(sb: &Sandbox, jobs: &[(Vec<String>, String)]) -> Vec<String> {
    let mut children: Vec<(Child, String)> = Vec::new();
    for (args, state) in jobs {
        let mut c = sb.cmd(BIN);
        c.arg("--config-dir")
            .arg(&sb.config_dir)
            .arg("--run-dir")
            .arg(&sb.run_dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut ch = c.spawn().expect("spawning a hook");
        let mut w = ch.stdin.take().unwrap();
        w.write_all(state.as_bytes()).unwrap();
        drop(w);
        children.push((ch, state.clone()));
    }
    let mut failed = Vec::new();
    for (ch, state) in children {
        let out = ch.wait_with_output().unwrap();
        if !out.status.success() {
            failed.push(format!(
                "{state}: {:?} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    failed
}

fn record(sb: &Sandbox, id: &str) -> Value {
    let p = sb.run_dir.join("endpoints").join(format!("{id}.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// `nets`: the networks, containers spread over them round-robin.
fn start_and_stop(short: &str, nets: &[(&str, &str)]) {
    let t0 = Instant::now();
    let sb = Sandbox::new(short);
    for (name, subnet) in nets {
        sb.nethook(&["network", "create", name, "--subnet", subnet, "--no-dns"])
            .ok();
    }
    // The containers: `unshare -n sleep` processes, each in a namespace of its own.
    let pids: Vec<u32> = (0..N)
        .map(|_| sb.spawn_in(&sb.path(), &["unshare", "-n", "sleep", "300"]))
        .collect();
    // `unshare -n` makes the namespace before it execs sleep: sleep running means it is in.
    let ready = wait_until(Duration::from_secs(30), || {
        pids.iter().all(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
    });
    assert!(ready, "the container processes did not all get going");
    let bundle = hand_bundle(&sb, "b", &[]);
    let ids: Vec<String> = (0..N).map(|i| format!("l{i}")).collect();
    let jobs: Vec<(Vec<String>, String)> = (0..N)
        .map(|i| {
            let net = nets[i % nets.len()].0;
            (
                vec![
                    "hook".into(),
                    "createRuntime".into(),
                    "--network".into(),
                    net.into(),
                ],
                create_state(&ids[i], Some(pids[i]), &bundle),
            )
        })
        .collect();
    let prep = t0.elapsed();

    // Start all at once.
    let t = Instant::now();
    let failed = hooks_at_once(&sb, &jobs);
    let started = t.elapsed();
    assert_eq!(failed, Vec::<String>::new(), "createRuntime failures");

    // Every container has one address, leased to it and to no one else, its veth and its
    // masquerade element; check finds nothing wrong.
    let mut seen: BTreeSet<(String, Ipv4Addr)> = BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let r = record(&sb, id);
        assert_eq!(r["state"], "ready", "{r}");
        let a = &r["attachments"][0];
        let net = a["network"].as_str().unwrap().to_string();
        assert_eq!(net, nets[i % nets.len()].0);
        let ip: Ipv4Addr = a["ipv4"].as_str().unwrap().parse().unwrap();
        assert!(in_subnet(ip, nets[i % nets.len()].1), "{ip}");
        assert_eq!(sb.lease_holder(&net, ip).as_deref(), Some(id.as_str()));
        assert!(seen.insert((net, ip)), "{ip} handed out twice");
    }
    assert_eq!(sb.lease_files().len(), N, "leases != records");
    assert_eq!(sb.endpoint_files().len(), N);
    assert_eq!(sb.veths().len(), N, "veths");
    assert_eq!(sb.nft_elems("masq4").len(), N, "masq4 elements");
    let chk = sb.nethook(&["check"]);
    assert_eq!(chk.code, 0, "check: {}{}", chk.stdout, chk.stderr);

    // Stop all: the containers die, then every poststop at once.
    let t = Instant::now();
    for p in &pids {
        sb.kill(*p);
    }
    let stops: Vec<(Vec<String>, String)> = ids
        .iter()
        .map(|id| {
            (
                vec!["hook".into(), "poststop".into()],
                create_state(id, None, &bundle),
            )
        })
        .collect();
    let failed = hooks_at_once(&sb, &stops);
    let stopped = t.elapsed();
    assert_eq!(failed, Vec::<String>::new(), "poststop failures");

    // Nothing left: records, leases, port claims, per-container locks, links, elements, and
    // processes in the sandbox (link reapers, a DNS daemon).
    assert_eq!(sb.endpoint_files(), Vec::<String>::new(), "records left");
    assert_eq!(sb.lease_files(), Vec::<String>::new(), "leases left");
    let locks: Vec<String> = list_dir(&sb.run_dir.join("locks"))
        .into_iter()
        .filter(|l| l.starts_with("ctr-"))
        .collect();
    assert_eq!(locks, Vec::<String>::new(), "container locks left");
    assert!(
        wait_until(LINK_GRACE, || sb.veths().is_empty()),
        "veths left: {:?}",
        sb.veths()
    );
    assert!(
        wait_until(Duration::from_secs(10), || sb.nft_elems("masq4").is_empty()),
        "masq4 elements left: {:?}",
        sb.nft_elems("masq4")
    );
    assert!(
        wait_until(Duration::from_secs(10), || sb.pids().is_empty()),
        "processes left in the sandbox: {:?}",
        sb.pids()
    );
    let chk = sb.nethook(&["check"]);
    assert_eq!(chk.code, 0, "check: {}{}", chk.stdout, chk.stderr);
    let total = t0.elapsed();
    eprintln!(
        "load {short}: {N} containers over {} network(s): setup {prep:.2?}, {N} createRuntime at once {started:.2?}, {N} poststop at once {stopped:.2?}, total {total:.2?}",
        nets.len()
    );
    assert!(total < BOUND, "took {total:?}, over {BOUND:?}");
}

#[test]
fn load_200_on_one_network() {
    if !can_run("load_one", &["nft"]) {
        return;
    }
    start_and_stop("ld1", &[("l1", "10.94.0.0/16")]);
}

#[test]
fn load_200_over_four_networks() {
    if !can_run("load_four", &["nft"]) {
        return;
    }
    start_and_stop(
        "ld4",
        &[
            ("l1", "10.95.1.0/24"),
            ("l2", "10.95.2.0/24"),
            ("l3", "10.95.3.0/24"),
            ("l4", "10.95.4.0/24"),
        ],
    );
}
