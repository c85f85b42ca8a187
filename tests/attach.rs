//! `nethook attach` / `detach` / `ps` by hand, on namespaces the test makes: by path, by name
//! under /run/netns, by `pid:PID`, and many at once.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

const TOOLS: &[&str] = &["socat", "ss"];

fn web(sb: &Sandbox) {
    sb.nethook(&["network", "create", "web", "--subnet", "10.90.3.0/24"])
        .ok();
}

/// The MAC of `ifname` in a namespace, as `ip -j link` shows it.
fn mac_in(netns: &str, ifname: &str) -> String {
    Sandbox::links_in(netns)
        .into_iter()
        .find(|l| l["ifname"] == ifname)
        .and_then(|l| l["address"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no {ifname} in {netns}"))
}

#[test]
fn attach_ps_reach_and_detach() {
    if !can_run("attach", TOOLS) {
        return;
    }
    let sb = Sandbox::new("att");
    web(&sb);
    let x = sb.add_netns("x");
    let xp = format!("/run/netns/{x}");

    let out = sb.nethook(&["attach", &xp, "--network", "web"]).ok();
    // The default id is the namespace's name.
    let line = out.stdout.trim();
    assert!(
        line.starts_with(&format!("{x} web eth0 10.90.3.")),
        "{line}"
    );

    // What the namespace has now.
    let addrs = Sandbox::addrs4_in(&xp);
    let eth0: Vec<&(String, String)> = addrs.iter().filter(|(i, _)| i == "eth0").collect();
    assert_eq!(eth0.len(), 1, "{addrs:?}");
    let ip = addr_of(&eth0[0].1);
    assert!(eth0[0].1.ends_with("/24"));
    assert!(in_subnet(ip, "10.90.3.0/24"));
    assert_ne!(ip, Ipv4Addr::new(10, 90, 3, 1));
    let mac = mac_in(&xp, "eth0");

    // ps, as JSON: the fields of DESIGN.md section 9.
    let rows = sb.ps();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    for k in [
        "id",
        "network",
        "interface",
        "ipv4",
        "ipv6",
        "mac",
        "ports",
        "netns",
        "state",
    ] {
        assert!(r.get(k).is_some(), "ps row has no {k:?}: {r}");
    }
    assert_eq!(r["id"], x.as_str());
    assert_eq!(r["network"], "web");
    assert_eq!(r["interface"], "eth0");
    let v4: Vec<Ipv4Addr> = r["ipv4"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| addr_of(a.as_str().unwrap()))
        .collect();
    assert_eq!(v4, vec![ip]);
    assert_eq!(r["ipv6"], serde_json::json!([]));
    assert_eq!(r["mac"], mac.as_str());
    assert_eq!(r["ports"], serde_json::json!([]));
    assert_eq!(r["netns"], xp.as_str());
    assert_eq!(r["state"], "ready");

    // ps, as a table: a header, one row, and the DNS daemon serving it (web has DNS on).
    let t = sb.nethook(&["ps"]).ok();
    let lines: Vec<&str> = t.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", t.stdout);
    assert!(
        lines[2].starts_with("dns daemon: running, pid "),
        "{}",
        t.stdout
    );
    for h in ["ID", "NETWORK", "INTERFACE", "ADDRESSES", "MAC", "STATE"] {
        assert!(lines[0].split_whitespace().any(|w| w == h), "{}", lines[0]);
    }
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cells[0], x);
    for want in ["web", "eth0", &mac, &xp, "ready"] {
        assert!(cells.contains(&want), "{want} not in {cells:?}");
    }
    let with_len = format!("{ip}/24");
    let bare = ip.to_string();
    assert!(
        cells.contains(&with_len.as_str()) || cells.contains(&bare.as_str()),
        "{ip} not in {cells:?}"
    );
    // Filtered by network.
    assert_eq!(
        sb.nethook(&["ps", "--network", "web"])
            .ok()
            .stdout
            .lines()
            .count(),
        3
    );
    let other = sb
        .nethook(&["--format", "json", "ps", "--network", "other"])
        .ok();
    assert_eq!(
        serde_json::from_str::<Value>(&other.stdout).unwrap(),
        serde_json::json!([])
    );

    // The sandbox reaches it by TCP.
    sb.serve_in(&xp, 8080, "hello-from-x");
    assert_eq!(
        sb.tcp_get(ip, 8080).as_deref().map(str::trim),
        Some("hello-from-x")
    );

    // Detach removes everything.
    let host_if = r["host_interface"].as_str().unwrap_or_default().to_string();
    let d = sb.nethook(&["detach", &x]).ok();
    assert_eq!(d.stdout.trim(), "");
    assert!(
        !Sandbox::link_names_in(&xp).contains("eth0"),
        "eth0 still in {x}"
    );
    if !host_if.is_empty() {
        sb.assert_gone(&x, ip, &host_if);
    }
    sb.assert_no_endpoints();
    assert_eq!(sb.ps(), Vec::<Value>::new());
    assert!(sb.tcp_dead(ip, 8080), "{ip} still answers");
    // A second detach is fine.
    sb.nethook(&["detach", &x]).ok();
    sb.assert_no_endpoints();
}

#[test]
fn attach_by_name_with_id_ifname_ip_and_mac() {
    if !can_run("attach_name", TOOLS) {
        return;
    }
    let sb = Sandbox::new("attn");
    web(&sb);
    let x = sb.add_netns("n");
    sb.nethook(&[
        "attach",
        &x,
        "--network",
        "web",
        "--id",
        "my-endpoint",
        "--ifname",
        "net0",
        "--ip",
        "10.90.3.50",
        "--mac",
        "02:42:ac:11:00:05",
    ])
    .ok();
    let xp = format!("/run/netns/{x}");
    assert_eq!(
        Sandbox::addrs4_in(&xp),
        vec![("net0".to_string(), "10.90.3.50/24".to_string())]
    );
    assert_eq!(mac_in(&xp, "net0"), "02:42:ac:11:00:05");
    let row = sb.ps_row("my-endpoint");
    assert_eq!(row["interface"], "net0");
    assert_eq!(row["netns"], xp.as_str());
    // The same id twice is refused, and the first stays.
    sb.nethook(&["attach", &xp, "--network", "web", "--id", "my-endpoint"])
        .refused(&["my-endpoint"]);
    assert_eq!(sb.ps().len(), 1);
    assert_eq!(
        sb.lease_holder("web", "10.90.3.50".parse().unwrap())
            .as_deref(),
        Some("my-endpoint")
    );

    sb.nethook(&["detach", "my-endpoint"]).ok();
    assert!(!Sandbox::link_names_in(&xp).contains("net0"));
    sb.assert_no_endpoints();
}

#[test]
fn attach_by_pid() {
    if !can_run("attach_pid", TOOLS) {
        return;
    }
    let sb = Sandbox::new("attp");
    web(&sb);
    let pid = sb.spawn_unshared_sleep();
    let ns = format!("/proc/{pid}/ns/net");
    sb.nethook(&["attach", &format!("pid:{pid}"), "--network", "web"])
        .ok();
    let id = format!("pid-{pid}");
    let ip = sb.ip_of(&id);
    assert_eq!(
        Sandbox::addrs4_in(&ns),
        vec![("eth0".to_string(), format!("{ip}/24"))]
    );
    sb.serve_in(&ns, 8081, "hello-from-pid");
    assert_eq!(
        sb.tcp_get(ip, 8081).as_deref().map(str::trim),
        Some("hello-from-pid")
    );
    let host_if = sb.ps_row(&id)["host_interface"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    sb.nethook(&["detach", &id]).ok();
    assert!(!Sandbox::link_names_in(&ns).contains("eth0"));
    if !host_if.is_empty() {
        sb.assert_gone(&id, ip, &host_if);
    }
    sb.assert_no_endpoints();
}

#[test]
fn parallel_attaches_get_distinct_addresses_and_detach_cleanly() {
    if !can_run("attach_parallel", TOOLS) {
        return;
    }
    let sb = Sandbox::new("attpar");
    const N: usize = 10;
    let names: Vec<String> = (0..N).map(|i| sb.add_netns(&format!("p{i}"))).collect();
    // All at once, on the default network (made on first use, by whichever comes first).
    let runs: Vec<Run> = std::thread::scope(|s| {
        let hs: Vec<_> = names
            .iter()
            .map(|n| {
                let sb = &sb;
                s.spawn(move || sb.nethook(&["attach", &format!("/run/netns/{n}")]))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in runs {
        r.ok();
    }
    let mut ips = BTreeSet::new();
    for n in &names {
        let a = Sandbox::addrs4_in(&format!("/run/netns/{n}"));
        assert_eq!(a.len(), 1, "{n}: {a:?}");
        assert_eq!(a[0].0, "eth0");
        let ip = addr_of(&a[0].1);
        assert!(in_subnet(ip, "10.89.0.0/16"), "{n}: {ip}");
        assert_eq!(sb.ip_of(n), ip, "ps disagrees with {n}");
        ips.insert(ip);
    }
    assert_eq!(ips.len(), N, "duplicate addresses: {ips:?}");
    assert_eq!(sb.ps().len(), N);
    assert_eq!(sb.veths().len(), N);
    assert_eq!(sb.lease_files().len(), N);
    assert_eq!(
        list_dir(&sb.config_dir.join("networks")),
        vec!["nethook.json".to_string()]
    );

    // Neighbours reach each other across the bridge.
    let first = format!("/run/netns/{}", names[0]);
    sb.serve_in(&first, 8082, "hello-from-first");
    let first_ip = sb.ip_of(&names[0]);
    assert_eq!(
        Sandbox::tcp_get_from(&format!("/run/netns/{}", names[N - 1]), first_ip, 8082)
            .as_deref()
            .map(str::trim),
        Some("hello-from-first")
    );

    let runs: Vec<Run> = std::thread::scope(|s| {
        let hs: Vec<_> = names
            .iter()
            .map(|n| {
                let sb = &sb;
                s.spawn(move || sb.nethook(&["detach", n]))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in runs {
        r.ok();
    }
    sb.assert_no_endpoints();
    assert_eq!(sb.ps(), Vec::<Value>::new());
    for n in &names {
        assert_eq!(
            Sandbox::link_names_in(&format!("/run/netns/{n}"))
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["lo".to_string()]
        );
    }
    for ip in ips {
        assert!(
            wait_until(std::time::Duration::from_secs(5), || !sb.masq4_has(ip)),
            "masq4 still holds {ip}"
        );
    }
}

/// rx packet counter of `eth0` in a namespace.
fn rx_packets(ns: &str) -> u64 {
    let r = run(
        Command::new("ip").args(["-n", ns, "-s", "-j", "link", "show", "eth0"]),
        None,
    )
    .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap()
}

#[test]
fn a_new_container_does_not_flood_the_others() {
    if !can_run("no_flood", &["ip", "nsenter"]) {
        return;
    }
    // Each attach used to send IPv6 link-local chatter (DAD, router solicitations, MLD) that
    // the bridge flooded to every other container: the cost of the n-th container grew with n.
    let sb = Sandbox::new("flood");
    let mut nss = Vec::new();
    for i in 0..10 {
        let ns = sb.add_netns(&format!("f{i}"));
        sb.nethook(&[
            "attach",
            &format!("/run/netns/{ns}"),
            "--id",
            &format!("f{i}"),
        ])
        .ok();
        nss.push(ns);
    }
    // No IPv6 address on an IPv4-only network's interface.
    let r = run(
        Command::new("ip").args(["-n", &nss[0], "-6", "addr", "show", "dev", "eth0"]),
        None,
    )
    .ok();
    assert!(!r.stdout.contains("inet6"), "{}", r.stdout);
    std::thread::sleep(Duration::from_millis(1500));
    let before = rx_packets(&nss[0]);
    let ns = sb.add_netns("fnew");
    sb.nethook(&["attach", &format!("/run/netns/{ns}"), "--id", "fnew"])
        .ok();
    std::thread::sleep(Duration::from_millis(1500));
    let seen = rx_packets(&nss[0]) - before;
    assert!(
        seen <= 3,
        "an existing container received {seen} packets from one new attach"
    );
}
