//! End to end with a real runtime: busybox containers under `runc` (inside a sandbox netns) with
//! nethook as their createRuntime and poststop hooks. What is checked is what a user sees: the
//! container's own view (`ip`, /etc files) printed from inside it, TCP connections between
//! containers, the sandbox ("host") and a peer namespace behind it, and after the container
//! ends, `ip link`, the run dir and the nft table of the sandbox.

mod common;

use common::*;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Split a script's output into sections headed by `== NAME` lines.
fn sections(out: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let mut cur: Option<String> = None;
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("== ") {
            cur = Some(name.trim().to_string());
            map.insert(name.trim().to_string(), String::new());
        } else if let Some(c) = &cur {
            let s = map.get_mut(c).unwrap();
            s.push_str(line);
            s.push('\n');
        }
    }
    map
}

/// The word after `key` in `text` ("inet" -> "10.89.0.2/16").
fn word_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut it = text.split_whitespace();
    while let Some(w) = it.next() {
        if w == key {
            return it.next();
        }
    }
    None
}

/// A script printing the container's view of its network, in sections.
const SHOW: &str = "echo '== eth0'; ip -o -4 addr show dev eth0; \
    echo '== mac'; cat /sys/class/net/eth0/address; \
    echo '== lo'; ip -o link show dev lo; ip -o -4 addr show dev lo; \
    echo '== route'; ip route | grep '^default'; \
    echo '== hostname'; cat /etc/hostname; \
    echo '== hosts'; cat /etc/hosts; \
    echo '== resolv'; cat /etc/resolv.conf; \
    echo '== links'; ip -o link; \
    echo '== end'";

/// What the SHOW script printed about eth0: ("10.89.0.2/16", mac, default route line).
fn eth0_view(s: &HashMap<String, String>) -> (String, String, String) {
    let inet = word_after(&s["eth0"], "inet")
        .unwrap_or_else(|| panic!("no IPv4 address on eth0: {:?}", s["eth0"]))
        .to_string();
    (
        inet,
        s["mac"].trim().to_string(),
        s["route"].trim().to_string(),
    )
}

/// True when some /etc/hosts line maps `ip` to every one of `names`.
fn hosts_names(hosts: &str, ip: Ipv4Addr, names: &[&str]) -> bool {
    hosts.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.next() == Some(&ip.to_string()) && {
            let rest: Vec<&str> = f.collect();
            names.iter().all(|n| rest.contains(n))
        }
    })
}

/// Snapshot of everything nethook keeps, to show that something changed nothing.
fn snapshot(sb: &Sandbox) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
    let mut nft = sb.nft_elems("masq4");
    nft.sort();
    (
        sb.endpoint_files(),
        sb.lease_files(),
        sb.link_names().into_iter().collect(),
        nft,
    )
}

#[test]
fn container_on_the_default_network_sees_its_network() {
    if !can_run("default_network", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("dflt");
    let b = sb.bundle("dflt", SHOW);
    let r = sb.runc_run(&b).ok();
    let s = sections(&r.stdout);
    assert!(
        s.contains_key("end"),
        "the script did not finish: {}",
        r.stdout
    );

    // eth0 with an address from the default network, 10.89.0.0/16 (nothing overlaps it here).
    let (inet, mac, route) = eth0_view(&s);
    assert!(inet.ends_with("/16"), "eth0 has {inet}");
    let ip = addr_of(&inet);
    assert!(in_subnet(ip, "10.89.0.0/16"), "eth0 has {inet}");
    assert_ne!(ip, Ipv4Addr::new(10, 89, 0, 1), "the gateway's address");
    assert_eq!(mac.len(), 17, "eth0 mac {mac}");
    // Default route via the gateway.
    assert!(
        route.starts_with("default via 10.89.0.1 dev eth0"),
        "route: {route}"
    );
    // lo up, with its address.
    let lo = &s["lo"];
    let flags = lo.split('<').nth(1).and_then(|x| x.split('>').next());
    assert!(
        flags.is_some_and(|f| f.split(',').any(|x| x == "UP")),
        "lo is not up: {lo}"
    );
    assert!(lo.contains("inet 127.0.0.1/8"), "lo: {lo}");
    // Only lo and eth0.
    assert_eq!(s["links"].lines().count(), 2, "links: {}", s["links"]);
    // The files.
    let name = b.hostname();
    assert_eq!(s["hostname"].trim(), name);
    assert!(
        hosts_names(&s["hosts"], ip, &[&name]),
        "/etc/hosts does not name {name} at {ip}:\n{}",
        s["hosts"]
    );
    assert!(hosts_names(
        &s["hosts"],
        Ipv4Addr::LOCALHOST,
        &["localhost"]
    ));
    let ns: Vec<&str> = s["resolv"]
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .collect();
    assert!(
        !ns.is_empty(),
        "no nameserver in resolv.conf:\n{}",
        s["resolv"]
    );
    for n in ns {
        let a: Ipv4Addr = n.trim().parse().expect("nameserver address");
        assert!(!a.is_loopback(), "resolv.conf points at the host's {a}");
    }
    // The files are in the rootfs, seen from the host too.
    assert_eq!(
        std::fs::read_to_string(b.rootfs().join("etc/hostname")).unwrap(),
        format!("{name}\n")
    );

    // The default network was made on first use, as `network ls` shows it.
    let ls = sb.nethook(&["--format", "json", "network", "ls"]).ok();
    let nets: serde_json::Value = serde_json::from_str(&ls.stdout).unwrap();
    assert_eq!(nets.as_array().unwrap().len(), 1, "{nets}");
    assert_eq!(nets[0]["name"], "nethook");
    assert_eq!(nets[0]["subnets"][0]["subnet"], "10.89.0.0/16");
    assert_eq!(nets[0]["subnets"][0]["gateway"], "10.89.0.1");
    // Its bridge in the sandbox carries the gateway.
    assert!(Sandbox::addrs4_in(&sb.path()).contains(&("nethook0".into(), "10.89.0.1/16".into())));

    // `runc run` ended: poststop left nothing.
    sb.assert_no_endpoints();
    assert!(
        wait_until(Duration::from_secs(5), || !sb.masq4_has(ip)),
        "masq4 still holds {ip}"
    );
}

#[test]
fn container_reaches_the_gateway() {
    if !can_run("gateway", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("gw");
    // Host services on the gateway are closed to containers except what the admin allows.
    sb.nethook(&[
        "network",
        "create",
        "nethook",
        "--subnet",
        "10.89.0.0/16",
        "--bridge",
        "nethook0",
        "--opt",
        "allow_host_ports=7001",
    ])
    .ok();
    sb.serve_in(&sb.path(), 7001, "hello-from-the-host");
    sb.serve_in(&sb.path(), 7002, "not-allowed");
    let b = sb.bundle(
        "gw",
        "gw=$(ip route | awk '/^default/ {print $3}'); echo \"== gw\"; echo $gw; \
         echo '== reply'; timeout 5 nc $gw 7001 </dev/null; \
         echo '== closed'; timeout 2 nc $gw 7002 </dev/null; echo '== end'",
    );
    let r = sb.runc_run(&b).ok();
    let s = sections(&r.stdout);
    assert_eq!(s["gw"].trim(), "10.89.0.1");
    assert_eq!(
        s["reply"].trim(),
        "hello-from-the-host",
        "no TCP answer from the gateway: {}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        s["closed"].trim(),
        "",
        "a host port not in allow_host_ports answered"
    );
}

#[test]
fn two_containers_talk_over_tcp_and_a_second_poststop_changes_nothing() {
    if !can_run("two_containers", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("two");
    let a = sb.runc_start(&sb.bundle("srv", "exec nc -ll -p 8080 -e echo hello-from-a"));
    sb.wait_listening_ctr(&a, 8080);
    let a_ip = sb.ip_of(&a.id);
    let a_if = sb.ps_row(&a.id)["host_interface"]
        .as_str()
        .unwrap()
        .to_string();

    let b = sb.bundle(
        "cli",
        &format!(
            "echo '== eth0'; ip -o -4 addr show dev eth0; \
             echo '== reply'; timeout 5 nc {a_ip} 8080 </dev/null; echo '== end'"
        ),
    );
    let r = sb.runc_run(&b).ok();
    let s = sections(&r.stdout);
    let b_ip = addr_of(word_after(&s["eth0"], "inet").expect("b has an address"));
    assert_ne!(a_ip, b_ip);
    assert!(in_subnet(b_ip, "10.89.0.0/16"));
    assert_eq!(
        s["reply"].trim(),
        "hello-from-a",
        "b got no answer from a at {a_ip}: {}\n{}",
        r.stdout,
        r.stderr
    );

    // b is gone, a is not (b's veth goes with its namespace, or poststop's reaper deletes it).
    assert_eq!(sb.endpoint_files(), vec![format!("{}.json", a.id)]);
    assert_eq!(sb.lease_files(), vec![format!("nethook/{a_ip}")]);
    wait_until(LINK_GRACE, || sb.veths() == vec![a_if.clone()]);
    assert_eq!(sb.veths(), vec![a_if.clone()]);
    assert!(
        wait_until(LINK_GRACE, || !sb.masq4_has(b_ip)),
        "masq4 still holds b's {b_ip}"
    );
    assert!(sb.masq4_has(a_ip), "masq4 lost a's {a_ip}");

    // A second poststop for b, by hand: exit 0, silent, and a keeps everything.
    let before = snapshot(&sb);
    let again = sb
        .nethook_stdin(&["hook", "poststop"], b.poststop_state().as_bytes())
        .ok();
    assert_eq!(again.stdout, "");
    assert_eq!(snapshot(&sb), before);
    assert_eq!(
        sb.tcp_get(a_ip, 8080).as_deref().map(str::trim),
        Some("hello-from-a")
    );

    sb.runc_stop(&a.id).ok();
    sb.assert_gone(&a.id, a_ip, &a_if);
}

#[test]
fn host_reaches_a_container_and_nothing_is_left_after_it() {
    if !can_run("host_to_container", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("h2c");
    let b = sb.bundle(
        "web",
        "exec nc -ll -p 8080 -e echo hello-from-the-container",
    );
    let c = sb.runc_start(&b);
    sb.wait_listening_ctr(&c, 8080);
    let row = sb.ps_row(&c.id);
    assert_eq!(row["state"], "ready");
    let ip = sb.ip_of(&c.id);
    let host_if = row["host_interface"].as_str().unwrap().to_string();
    // The host side of the veth is on the default bridge.
    let link = sb
        .links()
        .into_iter()
        .find(|l| l["ifname"] == host_if.as_str())
        .unwrap_or_else(|| panic!("{host_if} not in the sandbox"));
    assert_eq!(link["master"], "nethook0");
    assert_eq!(
        Sandbox::addrs4_in(&c.netns()),
        vec![("eth0".to_string(), format!("{ip}/16"))]
    );

    assert_eq!(
        sb.tcp_get(ip, 8080).as_deref().map(str::trim),
        Some("hello-from-the-container"),
        "the sandbox cannot reach {ip}:8080"
    );

    let del = sb.runc_stop(&c.id).ok();
    assert!(
        !del.stderr.contains("nethook"),
        "poststop complained: {}",
        del.stderr
    );
    sb.assert_gone(&c.id, ip, &host_if);
    sb.assert_no_endpoints();
    assert!(sb.tcp_dead(ip, 8080), "{ip} still answers");

    // A second poststop with the same state: exit 0, silent, changes nothing.
    let before = snapshot(&sb);
    let again = sb
        .nethook_stdin(&["hook", "poststop"], b.poststop_state().as_bytes())
        .ok();
    assert_eq!((again.stdout.as_str(), again.stderr.as_str()), ("", ""));
    assert_eq!(snapshot(&sb), before);
}

#[test]
fn outbound_traffic_is_masqueraded_behind_the_host() {
    if !can_run("masquerade", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("masq");
    let peer = sb.add_peer();
    let log = sb.dir.join("peer-seen.log");
    sb.spawn_in(
        &peer.path(),
        &[
            "socat",
            "TCP-LISTEN:9000,reuseaddr,fork",
            &format!(
                "SYSTEM:echo $SOCAT_PEERADDR >> {}; echo $SOCAT_PEERADDR",
                log.display()
            ),
        ],
    );
    sb.wait_listening(&peer.path(), 9000);

    let c = sb.runc_start(&sb.bundle("masq", "exec sleep 60"));
    let ip = sb.ip_of(&c.id);
    let host_if = sb.ps_row(&c.id)["host_interface"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        sb.masq4_has(ip),
        "set masq4 of table inet nethook has no element {ip}: {:?}",
        sb.nft_table()
    );

    let r = sb.runc_exec(&c, &format!("timeout 5 nc {} 9000 </dev/null", peer.ip));
    assert_eq!(
        r.stdout.trim(),
        peer.sandbox_ip.to_string(),
        "the peer saw the connection from {:?}, not from the host's {} (stderr: {})",
        r.stdout.trim(),
        peer.sandbox_ip,
        r.stderr
    );
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        vec![peer.sandbox_ip.to_string()],
        "source addresses the peer recorded"
    );
    assert!(!seen.contains(&ip.to_string()));

    sb.runc_stop(&c.id).ok();
    sb.assert_gone(&c.id, ip, &host_if);
}

#[test]
fn failing_setup_fails_runc_run_and_leaves_nothing() {
    if !can_run("failing_setup", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("fail");
    let mut first = sb.bundle("holder", "exec sleep 60");
    first.annotate("nethook.ip", "10.89.0.50");
    let a = sb.runc_start(&first);
    let ip: Ipv4Addr = "10.89.0.50".parse().unwrap();
    assert_eq!(sb.ip_of(&a.id), ip);
    assert_eq!(
        Sandbox::addrs4_in(&a.netns()),
        vec![("eth0".to_string(), "10.89.0.50/16".to_string())]
    );
    let before = snapshot(&sb);

    let mut second = sb.bundle("second", "echo this-must-not-run");
    second.annotate("nethook.ip", "10.89.0.50");
    let r = sb.runc_run(&second);
    assert_ne!(r.code, 0, "runc run succeeded: {}", r.stdout);
    assert!(!r.stdout.contains("this-must-not-run"));
    let msg = format!(
        "nethook: container {}: static address 10.89.0.50 on network nethook: is taken by {}",
        second.id, a.id
    );
    assert!(
        r.stderr.contains(&msg),
        "runc does not quote nethook's message {msg:?}:\n{}",
        r.stderr
    );
    // Nothing of the second container; the first keeps everything (also after the poststop
    // runc ran for the failed one).
    assert_eq!(snapshot(&sb), before);
    assert_eq!(
        sb.lease_holder("nethook", ip).as_deref(),
        Some(a.id.as_str())
    );
    assert!(!second.rootfs().join("etc").exists());

    let a_if = sb.ps_row(&a.id)["host_interface"]
        .as_str()
        .unwrap()
        .to_string();
    sb.runc_stop(&a.id).ok();
    sb.assert_gone(&a.id, ip, &a_if);
}

#[test]
fn failure_after_the_links_are_made_rolls_everything_back() {
    if !can_run("late_failure", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("late");
    // /etc in the rootfs is a plain file: writing /etc/hosts (the last step) fails, after the
    // address, the record, the veth and the firewall elements were made.
    let b = sb.bundle("late", "echo this-must-not-run");
    std::fs::write(b.rootfs().join("etc"), "not a directory").unwrap();
    let r = sb.runc_run(&b);
    assert_ne!(r.code, 0, "runc run succeeded: {}", r.stdout);
    assert!(!r.stdout.contains("this-must-not-run"));
    assert!(
        r.stderr.contains(&format!("nethook: container {}:", b.id)) && r.stderr.contains("/etc/"),
        "runc does not quote nethook's message:\n{}",
        r.stderr
    );
    sb.assert_no_endpoints();
    let all = sb.nft_elems("masq4");
    assert!(
        wait_until(Duration::from_secs(5), || sb.nft_elems("masq4").is_empty()),
        "masq4 elements left: {all:?}"
    );
    // Only the shared bridge stays.
    let links: Vec<String> = sb.link_names().into_iter().collect();
    assert_eq!(links, vec!["lo".to_string(), "nethook0".to_string()]);
}

#[test]
fn annotations_pick_network_address_mac_and_aliases() {
    if !can_run("annotations", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("ann");
    sb.nethook(&["network", "create", "web", "--subnet", "10.90.3.0/24"])
        .ok();
    let mut b = sb.bundle("ann", SHOW);
    b.annotate("nethook.network", "web")
        .annotate("nethook.ip", "10.90.3.77")
        .annotate("nethook.mac", "02:42:ac:11:00:99")
        .annotate("nethook.aliases", "db,cache");
    let r = sb.runc_run(&b).ok();
    let s = sections(&r.stdout);
    let (inet, mac, route) = eth0_view(&s);
    assert_eq!(inet, "10.90.3.77/24");
    assert_eq!(mac, "02:42:ac:11:00:99");
    assert!(
        route.starts_with("default via 10.90.3.1 dev eth0"),
        "{route}"
    );
    let ip: Ipv4Addr = "10.90.3.77".parse().unwrap();
    assert!(
        hosts_names(&s["hosts"], ip, &[&b.hostname(), "db", "cache"]),
        "/etc/hosts:\n{}",
        s["hosts"]
    );
    // Only web was used: the default network was not made.
    assert_eq!(
        list_dir(&sb.config_dir.join("networks")),
        vec!["web.json".to_string()]
    );
    sb.assert_no_endpoints();
}

#[test]
fn hook_arguments_pick_the_network_and_annotations_override_them() {
    if !can_run("hook_args", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("args");
    sb.nethook(&["network", "create", "web", "--subnet", "10.90.3.0/24"])
        .ok();
    sb.nethook(&["network", "create", "web2", "--subnet", "10.90.4.0/24"])
        .ok();
    let mut b = sb.bundle("args", SHOW);
    b.hook_args(&["--network", "web", "--ip", "10.90.3.88"]);
    let r = sb.runc_run(&b).ok();
    let (inet, _, route) = eth0_view(&sections(&r.stdout));
    assert_eq!(inet, "10.90.3.88/24");
    assert!(route.starts_with("default via 10.90.3.1 "), "{route}");

    let mut b = sb.bundle("args", SHOW);
    b.hook_args(&["--network", "web"]);
    b.annotate("nethook.network", "web2");
    let r = sb.runc_run(&b).ok();
    let (inet, _, route) = eth0_view(&sections(&r.stdout));
    assert!(in_subnet(addr_of(&inet), "10.90.4.0/24"), "{inet}");
    assert!(route.starts_with("default via 10.90.4.1 "), "{route}");
    sb.assert_no_endpoints();
}

#[test]
fn disabled_container_is_left_alone() {
    if !can_run("disabled", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("off");
    let mut b = sb.bundle(
        "off",
        "echo '== links'; ip -o link; echo '== hosts'; cat /etc/hosts 2>&1; echo '== end'",
    );
    b.annotate("nethook.disable", "true");
    let r = sb.runc_run(&b).ok();
    let s = sections(&r.stdout);
    let links: Vec<&str> = s["links"].lines().collect();
    assert_eq!(links.len(), 1, "links: {links:?}");
    assert!(links[0].contains(": lo:"), "{links:?}");
    assert!(!b.rootfs().join("etc/hosts").exists());
    assert!(!b.rootfs().join("etc/hostname").exists());
    // Nothing in the sandbox either: no network, bridge, endpoint or lease.
    assert_eq!(
        list_dir(&sb.config_dir.join("networks")),
        Vec::<String>::new()
    );
    assert_eq!(
        sb.link_names().into_iter().collect::<Vec<_>>(),
        vec!["lo".to_string()]
    );
    sb.assert_no_endpoints();
}

#[test]
fn container_joining_a_named_netns_is_networked_and_cleaned_up() {
    if !can_run("named_netns", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("join");
    // config.json names an existing namespace: it outlives the container, so the veth does not
    // go with it and poststop has to remove it.
    let x = sb.add_netns("x");
    let xp = format!("/run/netns/{x}");
    let mut b = sb.bundle("join", SHOW);
    for ns in b.config["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            ns["path"] = serde_json::json!(xp);
        }
    }
    let r = sb.runc_run(&b).ok();
    let s = sections(&r.stdout);
    let (inet, _, route) = eth0_view(&s);
    assert!(in_subnet(addr_of(&inet), "10.89.0.0/16"), "{inet}");
    assert!(
        route.starts_with("default via 10.89.0.1 dev eth0"),
        "{route}"
    );
    // After the container: nothing of it in the sandbox or in the namespace it joined.
    sb.assert_no_endpoints();
    assert!(
        wait_until(LINK_GRACE, || !Sandbox::link_names_in(&xp).contains("eth0")),
        "eth0 left in {x}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || sb.nft_elems("masq4").is_empty()),
        "masq4 elements left"
    );
}
