//! Crashes and faults (issue 7): nethook killed by SIGKILL at every fault point of attach and
//! detach (src/fault.rs, debug builds only), containers gone without a poststop, hooks run
//! twice or out of order, a reboot, a full or read-only run dir.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOOLS: &[&str] = &["nft", "socat", "ss"];

/// The bridges in the sandbox.
fn bridges(sb: &Sandbox) -> Vec<String> {
    sb.links()
        .iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "bridge")
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .collect()
}

/// The fault points, from the library itself.
use nethook::fault::POINTS;

/// Every listed point is really placed in the code (a point no transaction passes would make
/// its kill test vacuous), and every placed point is listed.
#[test]
fn points_match_the_source() {
    let mut placed = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("src dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, _) in text.match_indices("fault::point(\"") {
                    let rest = &text[i + "fault::point(\"".len()..];
                    placed.push(rest[..rest.find('"').unwrap()].to_string());
                }
            }
        }
    }
    for p in POINTS {
        assert!(
            placed.iter().any(|q| q == p),
            "{p} is listed but placed nowhere"
        );
    }
    for q in &placed {
        assert!(POINTS.contains(&q.as_str()), "{q} is placed but not listed");
    }
}

/// The nethook command line inside the sandbox, with `NETHOOK_FAULT` when given.
fn nethook_cmd(sb: &Sandbox, fault: Option<&str>, args: &[&str]) -> Command {
    let mut c = sb.cmd(BIN);
    c.arg("--config-dir")
        .arg(&sb.config_dir)
        .arg("--run-dir")
        .arg(&sb.run_dir)
        .args(args);
    match fault {
        Some(f) => c.env("NETHOOK_FAULT", f),
        None => c.env_remove("NETHOOK_FAULT"),
    };
    c
}

/// Spawn nethook with `stdin`; the caller waits.
fn spawn_nethook(sb: &Sandbox, fault: Option<&str>, args: &[&str], stdin: &str) -> Child {
    let mut c = nethook_cmd(sb, fault, args);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawning nethook");
    let mut w = child.stdin.take().unwrap();
    w.write_all(stdin.as_bytes()).unwrap();
    drop(w);
    child
}

/// Run the hook `stage` for `state` with fault `fault`; returns the exit status and stderr.
fn hook(
    sb: &Sandbox,
    fault: Option<&str>,
    stage: &str,
    args: &[&str],
    state: &str,
) -> (std::process::ExitStatus, String) {
    let mut a = vec!["hook", stage];
    a.extend_from_slice(args);
    let out = spawn_nethook(sb, fault, &a, state)
        .wait_with_output()
        .expect("waiting for nethook");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn assert_killed(st: std::process::ExitStatus, err: &str, point: &str) {
    assert_eq!(
        st.signal(),
        Some(libc::SIGKILL),
        "nethook was not killed at {point}: {st:?}, stderr: {err}"
    );
}

/// `nethook --format json check`: the findings.
fn check(sb: &Sandbox) -> Vec<Value> {
    let r = sb.nethook(&["--format", "json", "check"]);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("check json: {e}: {r:?}"))
}

/// The endpoint record of `id`, if any.
fn record(sb: &Sandbox, id: &str) -> Option<Value> {
    let p = sb.run_dir.join("endpoints").join(format!("{id}.json"));
    std::fs::read_to_string(p)
        .ok()
        .map(|s| serde_json::from_str(&s).unwrap())
}

/// Every lease: network -> (address -> holder).
fn leases(sb: &Sandbox) -> BTreeMap<String, BTreeMap<Ipv4Addr, String>> {
    let mut out = BTreeMap::new();
    for l in sb.lease_files() {
        let (net, ip) = l.split_once('/').unwrap();
        let Ok(ip) = ip.parse::<Ipv4Addr>() else {
            continue;
        };
        if let Some(h) = sb.lease_holder(net, ip) {
            out.entry(net.to_string())
                .or_insert_with(BTreeMap::new)
                .insert(ip, h);
        }
    }
    out
}

/// Files in the port claims tree held by `id`.
fn port_claims_of(sb: &Sandbox, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    let base = sb.run_dir.join("ports");
    for proto in list_dir(&base) {
        for port in list_dir(&base.join(&proto)) {
            for key in list_dir(&base.join(&proto).join(&port)) {
                let f = base.join(&proto).join(&port).join(&key);
                if std::fs::read_to_string(&f).is_ok_and(|h| h.trim() == id) {
                    out.push(format!("{proto}/{port}/{key}"));
                }
            }
        }
    }
    out
}

/// No address is held twice on a network (a lease file per address makes that hold by
/// construction), every record's address is leased to it, every lease's holder has a record.
#[track_caller]
fn assert_leases_consistent(sb: &Sandbox) {
    let ls = leases(sb);
    let mut held: BTreeSet<(String, Ipv4Addr)> = BTreeSet::new();
    for f in sb.endpoint_files() {
        let id = f.trim_end_matches(".json");
        let rec = record(sb, id).unwrap();
        for a in rec["attachments"].as_array().unwrap() {
            let net = a["network"].as_str().unwrap().to_string();
            let ip: Ipv4Addr = a["ipv4"].as_str().unwrap().parse().unwrap();
            assert_eq!(
                ls.get(&net).and_then(|m| m.get(&ip)).map(String::as_str),
                Some(id),
                "address {ip} of {id} on {net} is not leased to it: {ls:?}"
            );
            assert!(held.insert((net, ip)), "{ip} is recorded twice");
        }
    }
    for (net, m) in &ls {
        let mut holders = BTreeSet::new();
        for (ip, h) in m {
            assert!(
                held.contains(&(net.clone(), *ip)),
                "lease {net}/{ip} of {h} has no record naming it"
            );
            assert!(holders.insert(h), "{h} holds two addresses on {net}");
        }
    }
}

/// The collectable findings of `id`.
fn collectable(found: &[Value], id: &str) -> Vec<String> {
    found
        .iter()
        .filter(|f| f["id"] == id && f["collectable"] == true)
        .map(|f| f["problem"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// After `gc`: nothing of `id` is left (record, lease, port claim, host link, masq element,
/// interface in its namespace).
#[track_caller]
fn assert_released(sb: &Sandbox, id: &str, ips: &[Ipv4Addr], host_ifs: &[String], netns: &str) {
    assert!(record(sb, id).is_none(), "record of {id} left after gc");
    for (net, m) in leases(sb) {
        assert!(
            !m.values().any(|h| h == id),
            "lease of {id} left on {net} after gc: {m:?}"
        );
    }
    assert_eq!(
        port_claims_of(sb, id),
        Vec::<String>::new(),
        "port claims left"
    );
    for h in host_ifs {
        assert!(
            wait_until(LINK_GRACE, || !sb.link_names().contains(h)),
            "host link {h} of {id} left after gc"
        );
    }
    for ip in ips {
        assert!(
            wait_until(Duration::from_secs(5), || !sb.masq4_has(*ip)),
            "masq4 still holds {ip} of {id}"
        );
    }
    let inside: Vec<String> = Sandbox::link_names_in(netns).into_iter().collect();
    assert_eq!(
        inside,
        vec!["lo".to_string()],
        "{id}'s namespace kept links"
    );
}

/// What a record says about addresses and host links.
fn ips_and_links(rec: &Option<Value>) -> (Vec<Ipv4Addr>, Vec<String>) {
    let mut ips = Vec::new();
    let mut links = Vec::new();
    for a in rec
        .as_ref()
        .and_then(|r| r["attachments"].as_array().cloned())
        .unwrap_or_default()
    {
        ips.push(a["ipv4"].as_str().unwrap().parse().unwrap());
        if a["driver"] == "bridge" {
            links.push(a["host_interface"].as_str().unwrap().to_string());
        }
    }
    (ips, links)
}

/// One kill at `point` during createRuntime of `id`, then check, gc and a fresh attach.
/// Returns the address the fresh attach got.
fn kill_and_recover(
    sb: &Sandbox,
    point: &str,
    id: &str,
    args: &[&str],
    others: &BTreeSet<Ipv4Addr>,
) -> Ipv4Addr {
    let pid = sb.spawn_unshared_sleep();
    let netns = format!("/proc/{pid}/ns/net");
    let bundle = hand_bundle(sb, "b", &[]);
    let state = create_state(id, Some(pid), &bundle);
    let (st, err) = hook(sb, Some(point), "createRuntime", args, &state);
    assert_killed(st, &err, point);

    // check: the half-made endpoint, collectable; gc: all of it released.
    let rec = record(sb, id);
    assert!(
        rec.is_some(),
        "{point}: no record left by the killed attach"
    );
    let found = check(sb);
    let c = collectable(&found, id);
    assert!(
        c.iter().any(|p| p.contains("half-made")),
        "{point}: check does not call {id} half-made: {found:?}"
    );
    let (ips, links) = ips_and_links(&rec);
    // A lease taken before the record named it is released too (found by holder).
    let mut ips_all = ips.clone();
    for m in leases(sb).values() {
        ips_all.extend(m.iter().filter(|(_, h)| *h == id).map(|(ip, _)| *ip));
    }
    for ip in &ips_all {
        assert!(!others.contains(ip), "{point}: {ip} handed out twice");
    }
    let g = sb.nethook(&["gc"]).ok();
    assert!(
        g.stdout.contains(id),
        "{point}: gc did not name {id}: {g:?}"
    );
    assert_released(sb, id, &ips_all, &links, &netns);
    assert_leases_consistent(sb);

    // A fresh attach of the same id, to the same still-running container.
    let (st, err) = hook(sb, None, "createRuntime", args, &state);
    assert!(st.success(), "{point}: fresh attach failed: {err}");
    let ip = sb.ip_of(id);
    assert!(!others.contains(&ip), "{point}: {ip} handed out twice");
    assert_leases_consistent(sb);
    assert_eq!(
        check(sb),
        Vec::<Value>::new(),
        "{point}: check after re-attach"
    );
    ip
}

/// Kill at every fault point of a bridge attach (published port, masquerade, /etc files):
/// check reports the half-made endpoint, gc releases all of it, a fresh attach of the same id
/// works, and no address is ever held by two containers (a witness container stays attached
/// throughout).
#[test]
fn sigkill_at_every_attach_point_bridge() {
    if !can_run("sigkill_bridge", TOOLS) {
        return;
    }
    let sb = Sandbox::new("fkb");
    sb.nethook(&[
        "network",
        "create",
        "f",
        "--subnet",
        "10.91.0.0/24",
        "--no-dns",
    ])
    .ok();
    let wpid = sb.spawn_unshared_sleep();
    let wb = hand_bundle(&sb, "w", &[]);
    let ws = create_state("witness", Some(wpid), &wb);
    let (st, err) = hook(&sb, None, "createRuntime", &["--network", "f"], &ws);
    assert!(st.success(), "{err}");
    let wip = sb.ip_of("witness");
    let started = Instant::now();
    let mut n = 0;
    for (i, point) in POINTS
        .iter()
        .filter(|p| p.starts_with("attach.") || p.starts_with("bridge."))
        .enumerate()
    {
        // The network-rule points only fire when a bridge is created: a network of their own.
        let net = if point.contains("net-rules") || *point == "attach.bridge" {
            let name = format!("g{i}");
            sb.nethook(&[
                "network",
                "create",
                &name,
                "--subnet",
                &format!("10.92.{i}.0/24"),
                "--no-dns",
            ])
            .ok();
            name
        } else {
            "f".to_string()
        };
        let id = format!("k{i}");
        let port = format!("{}:80", 18000 + i);
        let args = ["--network", net.as_str(), "--publish", port.as_str()];
        let others: BTreeSet<Ipv4Addr> = [wip].into();
        let ip = kill_and_recover(&sb, point, &id, &args, &others);
        if net != "f" {
            // The new bridge has its network's elements, however the first attempt died.
            let set: Vec<String> = sb.nft_elems("bridges");
            for b in bridges(&sb) {
                assert!(set.contains(&b), "{point}: {b} not in set bridges {set:?}");
            }
        }
        assert!(sb.masq4_has(ip), "{point}: re-attach has no masq4 element");
        let pc = port_claims_of(&sb, &id);
        assert_eq!(pc.len(), 1, "{point}: port claims of the re-attach: {pc:?}");
        // Stopped the usual way.
        let (st, err) = hook(
            &sb,
            None,
            "poststop",
            &[],
            &create_state(&id, None, Path::new("/nonexistent")),
        );
        assert!(st.success(), "{err}");
        assert!(record(&sb, &id).is_none());
        // The witness is untouched by every gc.
        assert_eq!(sb.lease_holder("f", wip).as_deref(), Some("witness"));
        n += 1;
    }
    assert!(n >= 14, "only {n} attach points tried");
    eprintln!(
        "sigkill_at_every_attach_point_bridge: {n} points in {:?}",
        started.elapsed()
    );
    assert_leases_consistent(&sb);
    assert_eq!(check(&sb), Vec::<Value>::new());
}

/// A macvlan network on the sandbox's LAN (tests/common: a veth parent `lan0`).
fn macvlan_net(sb: &Sandbox, name: &str) {
    sb.add_lan();
    sb.create_macvlan(name, &[]).ok();
}

/// The same for a macvlan network (the child lives inside the container's namespace).
#[test]
fn sigkill_at_every_attach_point_macvlan() {
    if !can_run("sigkill_macvlan", TOOLS) {
        return;
    }
    let sb = Sandbox::new("fkm");
    macvlan_net(&sb, "lan");
    let args = ["--network", "lan"];
    for (i, point) in [
        "attach.record-intent",
        "attach.lease",
        "attach.record",
        "macvlan.before-link",
        "macvlan.link",
        "attach.file-resolv",
        "attach.before-ready",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("m{i}");
        kill_and_recover(&sb, point, &id, &args, &BTreeSet::new());
        let (st, err) = hook(
            &sb,
            None,
            "poststop",
            &[],
            &create_state(&id, None, Path::new("/x")),
        );
        assert!(st.success(), "{err}");
    }
    assert_eq!(sb.endpoint_files(), Vec::<String>::new(), "records left");
    assert_eq!(sb.lease_files(), Vec::<String>::new(), "leases left");
}

/// Kill at every fault point of detach (poststop): check calls the endpoint half-made, gc
/// finishes the job, the id can be attached again.
#[test]
fn sigkill_at_every_detach_point() {
    if !can_run("sigkill_detach", TOOLS) {
        return;
    }
    let sb = Sandbox::new("fkd");
    sb.nethook(&[
        "network",
        "create",
        "f",
        "--subnet",
        "10.91.1.0/24",
        "--no-dns",
    ])
    .ok();
    for (i, point) in POINTS
        .iter()
        .filter(|p| p.starts_with("detach."))
        .enumerate()
    {
        let id = format!("d{i}");
        let pid = sb.spawn_unshared_sleep();
        let netns = format!("/proc/{pid}/ns/net");
        let bundle = hand_bundle(&sb, "b", &[]);
        let state = create_state(&id, Some(pid), &bundle);
        let args = ["--network", "f", "--publish", "18100:80"];
        let (st, err) = hook(&sb, None, "createRuntime", &args, &state);
        assert!(st.success(), "{err}");
        let rec = record(&sb, &id);
        let (ips, links) = ips_and_links(&rec);
        let stop = create_state(&id, None, &bundle);
        let (st, err) = hook(&sb, Some(point), "poststop", &[], &stop);
        assert_killed(st, &err, point);
        let found = check(&sb);
        assert!(
            collectable(&found, &id)
                .iter()
                .any(|p| p.contains("half-made")),
            "{point}: {found:?}"
        );
        sb.nethook(&["gc"]).ok();
        assert_released(&sb, &id, &ips, &links, &netns);
        let (st, err) = hook(&sb, None, "createRuntime", &args, &state);
        assert!(st.success(), "{point}: re-attach: {err}");
        let (st, err) = hook(&sb, None, "poststop", &[], &stop);
        assert!(st.success(), "{err}");
        sb.kill(pid);
    }
    sb.assert_no_endpoints();
}

/// Containers gone without a poststop, on every kind of network: gc finds them by the host
/// veth (bridge), the recorded namespace identity (macvlan, none) or the recorded container
/// process (host network, and a bridge container whose namespace outlives it).
#[test]
fn gc_releases_containers_gone_without_poststop() {
    if !can_run("gc_gone", TOOLS) {
        return;
    }
    let sb = Sandbox::new("fgg");
    sb.nethook(&[
        "network",
        "create",
        "f",
        "--subnet",
        "10.91.2.0/24",
        "--no-dns",
    ])
    .ok();
    macvlan_net(&sb, "lan");

    let mut cases: Vec<(String, u32)> = Vec::new();
    for (id, net) in [("gb", "f"), ("gm", "lan"), ("gn", "none")] {
        let pid = sb.spawn_unshared_sleep();
        let bundle = hand_bundle(&sb, "b", &[]);
        let (st, err) = hook(
            &sb,
            None,
            "createRuntime",
            &["--network", net],
            &create_state(id, Some(pid), &bundle),
        );
        assert!(st.success(), "{id}: {err}");
        cases.push((id.to_string(), pid));
    }
    // Host network: no network namespace in config.json; the container is a plain process.
    let hdir = sb.dir.join("host-bundle");
    std::fs::create_dir_all(hdir.join("rootfs")).unwrap();
    std::fs::write(
        hdir.join("config.json"),
        serde_json::json!({
            "ociVersion": "1.0.2", "hostname": "h", "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
        })
        .to_string(),
    )
    .unwrap();
    let hpid = sb.spawn_in(&sb.path(), &["sleep", "60"]);
    let (st, err) = hook(
        &sb,
        None,
        "createRuntime",
        &[],
        &create_state("gh", Some(hpid), &hdir),
    );
    assert!(st.success(), "gh: {err}");
    let h = record(&sb, "gh").unwrap();
    assert_eq!(h["netmode"], "host", "{h}");
    assert_eq!(h["container"]["pid"], hpid, "{h}");
    cases.push(("gh".into(), hpid));
    // Bridge, with a namespace that outlives the container (podman keeps it bound under
    // /run/netns): the veth stays, only the process tells.
    let keep = sb.add_netns("keep");
    let kpid = sb.spawn_in(&format!("/run/netns/{keep}"), &["sleep", "60"]);
    let kdir = sb.dir.join("keep-bundle");
    std::fs::create_dir_all(kdir.join("rootfs")).unwrap();
    std::fs::write(
        kdir.join("config.json"),
        serde_json::json!({
            "ociVersion": "1.0.2", "hostname": "k", "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "network", "path": format!("/run/netns/{keep}")}]},
        })
        .to_string(),
    )
    .unwrap();
    let (st, err) = hook(
        &sb,
        None,
        "createRuntime",
        &["--network", "f"],
        &create_state("gk", Some(kpid), &kdir),
    );
    assert!(st.success(), "gk: {err}");
    cases.push(("gk".into(), kpid));

    // All alive: nothing to collect.
    assert_eq!(check(&sb), Vec::<Value>::new());
    sb.nethook(&["gc"]).ok();
    assert_eq!(sb.endpoint_files().len(), cases.len());

    // The runtime was killed: every container died, no poststop ran.
    for (_, pid) in &cases {
        sb.kill(*pid);
    }
    let found = check(&sb);
    for (id, _) in &cases {
        assert!(
            !collectable(&found, id).is_empty(),
            "{id} not collectable: {found:?}"
        );
    }
    let g = sb.nethook(&["gc"]).ok();
    for (id, _) in &cases {
        assert!(g.stdout.contains(id.as_str()), "{id}: {}", g.stdout);
    }
    assert_eq!(sb.endpoint_files(), Vec::<String>::new());
    assert_eq!(sb.lease_files(), Vec::<String>::new());
    let veths = || -> Vec<String> {
        sb.veths()
            .into_iter()
            .filter(|v| !v.starts_with("lan"))
            .collect()
    };
    assert!(
        wait_until(LINK_GRACE, || veths().is_empty()),
        "{:?}",
        veths()
    );
    assert!(wait_until(Duration::from_secs(5), || sb
        .nft_elems("masq4")
        .is_empty()));
    assert_eq!(check(&sb), Vec::<Value>::new());
}

/// poststop twice; poststop while createRuntime is still at work; createRuntime twice.
#[test]
fn hooks_twice_and_out_of_order() {
    if !can_run("hooks_order", TOOLS) {
        return;
    }
    let sb = Sandbox::new("fho");
    sb.nethook(&[
        "network",
        "create",
        "f",
        "--subnet",
        "10.91.3.0/24",
        "--no-dns",
    ])
    .ok();
    let args = ["--network", "f"];

    // poststop twice: the second finds nothing and succeeds.
    let pid = sb.spawn_unshared_sleep();
    let b = hand_bundle(&sb, "b", &[]);
    let st1 = create_state("twice", Some(pid), &b);
    assert!(hook(&sb, None, "createRuntime", &args, &st1).0.success());
    sb.kill(pid);
    for _ in 0..2 {
        let (st, err) = hook(&sb, None, "poststop", &[], &create_state("twice", None, &b));
        assert!(st.success(), "{err}");
    }
    sb.assert_no_endpoints();
    // poststop with no createRuntime ever: fine too.
    let (st, err) = hook(&sb, None, "poststop", &[], &create_state("never", None, &b));
    assert!(st.success(), "{err}");

    // poststop while createRuntime is held at a fault point: poststop waits for it (the
    // container lock), then undoes all of it.
    let pid = sb.spawn_unshared_sleep();
    let st2 = create_state("early", Some(pid), &b);
    let creating = spawn_nethook(
        &sb,
        Some("attach.firewall:sleep=1500"),
        &["hook", "createRuntime", "--network", "f"],
        &st2,
    );
    assert!(
        wait_until(Duration::from_secs(5), || record(&sb, "early").is_some_and(
            |r| r["state"] == "creating" && !r["attachments"][0].is_null()
        )),
        "createRuntime did not get going"
    );
    let t = Instant::now();
    let (st, err) = hook(&sb, None, "poststop", &[], &create_state("early", None, &b));
    let waited = t.elapsed();
    assert!(st.success(), "{err}");
    let out = creating.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        waited >= Duration::from_millis(500),
        "poststop did not wait for createRuntime ({waited:?})"
    );
    assert!(record(&sb, "early").is_none(), "poststop left the record");
    sb.kill(pid);
    sb.assert_no_endpoints();

    // createRuntime twice for one id: the second is refused while the first's record is ready,
    // and changes nothing.
    let pid = sb.spawn_unshared_sleep();
    let st3 = create_state("dup", Some(pid), &b);
    assert!(hook(&sb, None, "createRuntime", &args, &st3).0.success());
    let ip = sb.ip_of("dup");
    let r = sb.nethook_stdin(&["hook", "createRuntime", "--network", "f"], st3.as_bytes());
    r.refused(&["dup", "already has an endpoint"]);
    assert_eq!(sb.ip_of("dup"), ip);
    assert_eq!(sb.lease_files().len(), 1);
    assert_eq!(check(&sb), Vec::<Value>::new());
    assert!(
        hook(&sb, None, "poststop", &[], &create_state("dup", None, &b))
            .0
            .success()
    );
    // After a crashed first createRuntime, the second recovers by itself (no gc).
    let (st, err) = hook(&sb, Some("bridge.configured"), "createRuntime", &args, &st3);
    assert_killed(st, &err, "bridge.configured");
    let (st, err) = hook(&sb, None, "createRuntime", &args, &st3);
    assert!(st.success(), "{err}");
    assert_leases_consistent(&sb);
    assert_eq!(sb.lease_files().len(), 1, "{:?}", sb.lease_files());
    assert_eq!(check(&sb), Vec::<Value>::new());
    assert!(
        hook(&sb, None, "poststop", &[], &create_state("dup", None, &b))
            .0
            .success()
    );
    sb.kill(pid);
    sb.assert_no_endpoints();
}

/// A reboot: the run dir empty, the bridges and the nftables table gone, the config dir intact.
/// `restore` brings bridges and table back, and new containers start and reach each other.
#[test]
fn restore_after_reboot() {
    if !can_run("restore_reboot", TOOLS) {
        return;
    }
    let sb = Sandbox::new("frb");
    sb.nethook(&[
        "network",
        "create",
        "f",
        "--subnet",
        "10.91.4.0/24",
        "--no-dns",
    ])
    .ok();
    let start = |id: &str| {
        let pid = sb.spawn_unshared_sleep();
        let b = hand_bundle(&sb, "b", &[]);
        let (st, err) = hook(
            &sb,
            None,
            "createRuntime",
            &["--network", "f"],
            &create_state(id, Some(pid), &b),
        );
        assert!(st.success(), "{id}: {err}");
        pid
    };
    let p = start("before");
    let bridges = bridges(&sb);
    assert_eq!(bridges.len(), 1, "{bridges:?}");

    // "Reboot", inside the sandbox only: containers gone, run dir empty, bridges and table gone.
    sb.kill(p);
    std::fs::remove_dir_all(&sb.run_dir).unwrap();
    for b in &bridges {
        sb.sh(&["ip", "link", "del", b]).ok();
    }
    sb.sh(&["nft", "delete", "table", "inet", "nethook"]).ok();
    assert!(sb.nft_table().is_none());

    sb.nethook(&["restore"]).ok();
    assert!(sb.nft_table().is_some(), "restore made no table");
    for b in &bridges {
        assert!(sb.link_names().contains(b), "restore did not make {b}");
        assert!(
            sb.nft_elems("bridges").contains(b),
            "{b} not in set bridges"
        );
    }
    assert_eq!(check(&sb), Vec::<Value>::new());

    // Containers start normally and reach each other.
    let a = start("a");
    let _b = start("b");
    let ip_a = sb.ip_of("a");
    sb.spawn_in(
        &format!("/proc/{a}/ns/net"),
        &[
            "socat",
            "TCP-LISTEN:7000,fork,reuseaddr",
            "SYSTEM:echo hi-from-a",
        ],
    );
    sb.wait_listening(&format!("/proc/{a}/ns/net"), 7000);
    let bpid = _b;
    let got = Sandbox::tcp_get_from(&format!("/proc/{bpid}/ns/net"), ip_a, 7000);
    assert_eq!(got.as_deref().map(str::trim), Some("hi-from-a"));
    assert_eq!(check(&sb), Vec::<Value>::new());
}

/// Run the createRuntime hook in a private mount namespace where `setup` (a shell snippet)
/// has replaced the run dir; returns what the hook printed and its exit code.
fn hook_with_run_dir(sb: &Sandbox, setup: &str, state: &str) -> Run {
    let script = format!(
        "set -e; {setup}; exec nsenter --net={} -- {BIN} --config-dir {} --run-dir {} hook createRuntime --network f",
        sb.path(),
        sb.config_dir.display(),
        sb.run_dir.display()
    );
    run(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .env_remove("NETHOOK_FAULT"),
        Some(state.as_bytes()),
    )
}

/// A full run dir and a read-only one: one clear line, nothing applied (no link, no element,
/// nothing in the container's namespace), and nothing left in the real run dir either.
#[test]
fn full_or_read_only_run_dir() {
    if !can_run("full_ro_run_dir", TOOLS) {
        return;
    }
    let sb = Sandbox::new("fro");
    sb.nethook(&[
        "network",
        "create",
        "f",
        "--subnet",
        "10.91.5.0/24",
        "--no-dns",
    ])
    .ok();
    std::fs::create_dir_all(&sb.run_dir).unwrap();
    let run = sb.run_dir.display().to_string();
    let full = format!(
        "mount -t tmpfs -o size=64k tmpfs {run}; dd if=/dev/zero of={run}/fill bs=4k 2>/dev/null || true"
    );
    let ro = format!("mount --bind {run} {run}; mount -o remount,ro,bind {run}");
    for (what, setup, needle) in [
        ("full", full.as_str(), "No space left on device"),
        ("read-only", ro.as_str(), "Read-only file system"),
    ] {
        let pid = sb.spawn_unshared_sleep();
        let b = hand_bundle(&sb, "b", &[]);
        let r = hook_with_run_dir(&sb, setup, &create_state("full", Some(pid), &b));
        r.refused(&["container full", needle]);
        eprintln!("{what} run dir: {}", r.stderr.trim());
        assert_eq!(
            Sandbox::link_names_in(&format!("/proc/{pid}/ns/net"))
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["lo".to_string()],
            "{what}: the container got an interface"
        );
        assert_eq!(sb.veths(), Vec::<String>::new(), "{what}: a veth was made");
        assert_eq!(sb.nft_elems("masq4"), Vec::<String>::new(), "{what}");
        assert!(!b.join("rootfs/etc").exists(), "{what}: files written");
        sb.assert_no_endpoints();
        sb.kill(pid);
    }
}
