//! Every network mode under real runc in the sandbox: macvlan (with a peer "host" on the
//! parent's segment), host, none, dual-stack, several networks per container with live
//! connect/disconnect, MTU, and `network ls --filter`. Each reachability claim is a real TCP
//! connection (socat) from the namespace a user would use.

mod common;

use common::*;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

/// `ip -o ADDR... ` inside a namespace, as text.
fn ip_in(netns: &str, args: &[&str]) -> String {
    run(Sandbox::cmd_in(netns, "ip").args(args), None)
        .ok()
        .stdout
}

fn ps_rows_of(sb: &Sandbox, id: &str) -> Vec<Value> {
    sb.ps().into_iter().filter(|r| r["id"] == id).collect()
}

#[test]
fn macvlan_container_is_reachable_from_its_segment() {
    if !can_run("macvlan", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("mv");
    let peer = sb.add_lan();
    sb.create_macvlan("lan", &[]).ok();
    let mut b = sb.bundle("mv", "sleep 60");
    b.annotate("nethook.network", "lan");
    let c = sb.runc_start(&b);
    let ip = sb.ip_of(&c.id);
    assert!(in_subnet(ip, "192.168.77.0/24"), "{ip}");
    // The container's eth0 is a macvlan child in bridge mode, up, with the default route via
    // the segment's router.
    let links = Sandbox::links_in(&c.netns());
    let eth0 = links.iter().find(|l| l["ifname"] == "eth0").expect("eth0");
    assert_eq!(eth0["linkinfo"]["info_kind"], "macvlan", "{eth0}");
    assert_eq!(eth0["linkinfo"]["info_data"]["mode"], "bridge", "{eth0}");
    assert!(ip_in(&c.netns(), &["route"]).contains("default via 192.168.77.2 dev eth0"));
    // No host-side link: the sandbox has only its own.
    let ours: Vec<String> = sb
        .veths()
        .into_iter()
        .filter(|v| v.starts_with("nh"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    assert_eq!(ps_rows_of(&sb, &c.id)[0]["host_interface"], "");

    // Both ways across the wire, with real TCP.
    sb.serve_in(&c.netns(), 8080, "from-mv");
    assert_eq!(
        Sandbox::tcp_get_from(&peer, ip, 8080).as_deref(),
        Some("from-mv\n"),
        "peer on the segment -> macvlan container"
    );
    sb.serve_in(&peer, 9090, "from-lan");
    assert_eq!(
        Sandbox::tcp_get_from(&c.netns(), Ipv4Addr::new(192, 168, 77, 2), 9090).as_deref(),
        Some("from-lan\n"),
        "macvlan container -> peer"
    );
    // The kernel's rule (README, doctor): the host cannot reach its own macvlan children
    // through the parent.
    run(
        Command::new("ip").args([
            "-n",
            &sb.name,
            "addr",
            "add",
            "192.168.77.1/24",
            "dev",
            "lan0",
        ]),
        None,
    )
    .ok();
    assert!(sb.tcp_dead(ip, 8080), "the host reached its macvlan child");

    // A second container on the same parent reaches the first (bridge mode).
    let mut b2 = sb.bundle("mv2", "sleep 60");
    b2.annotate("nethook.network", "lan");
    let c2 = sb.runc_start(&b2);
    assert_eq!(
        Sandbox::tcp_get_from(&c2.netns(), ip, 8080).as_deref(),
        Some("from-mv\n")
    );

    // Publishing has no meaning here: refused with one line, nothing made.
    let mut b3 = sb.bundle("mv3", "true");
    b3.annotate("nethook.network", "lan");
    b3.annotate("nethook.publish", "8081:80");
    let r = sb.runc_run(&b3);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("cannot publish ports"), "{}", r.stderr);

    sb.runc_stop(&c.id).ok();
    sb.runc_stop(&c2.id).ok();
    assert!(sb.endpoint_files().is_empty(), "{:?}", sb.endpoint_files());
    assert!(sb.lease_files().is_empty(), "{:?}", sb.lease_files());
}

#[test]
fn macvlan_bad_input_is_refused() {
    if !can_run("macvlan_bad", &[]) {
        return;
    }
    let sb = Sandbox::new("mvbad");
    let _peer = sb.add_lan();
    sb.nethook(&["network", "create", "web", "--subnet", "10.90.40.0/24"])
        .ok();
    for (args, needles) in [
        (
            vec!["--driver", "macvlan", "--subnet", "192.168.77.0/24"],
            vec!["parent"],
        ),
        (
            vec![
                "--driver",
                "macvlan",
                "--parent",
                "nosuch0",
                "--subnet",
                "192.168.77.0/24",
            ],
            vec!["nosuch0", "does not exist"],
        ),
        (
            vec![
                "--driver",
                "macvlan",
                "--parent",
                "nh-web",
                "--subnet",
                "192.168.77.0/24",
            ],
            vec!["nh-web", "bridge of network web"],
        ),
        (
            vec![
                "--driver",
                "macvlan",
                "--parent",
                "lan0",
                "--subnet",
                "192.168.77.0/24",
                "--mtu",
                "9000",
            ],
            vec!["mtu 9000", "above the MTU of parent lan0"],
        ),
        (
            vec![
                "--driver",
                "macvlan",
                "--parent",
                "lan0",
                "--subnet",
                "192.168.77.0/24",
                "--mode",
                "l3",
            ],
            vec!["macvlan mode \"l3\""],
        ),
        (
            vec!["--driver", "ipvlan", "--parent", "lan0"],
            vec!["ipvlan"],
        ),
        (
            vec!["--driver", "host", "--subnet", "10.1.0.0/24"],
            vec!["--subnet"],
        ),
    ] {
        let mut a = vec!["network", "create", "bad"];
        a.extend(args);
        sb.nethook(&a).refused(&needles);
    }
    let r = sb.nethook(&["--format", "json", "network", "ls"]).ok();
    let nets: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(nets.len(), 1, "only web exists: {nets:?}");
}

#[test]
fn host_network_shares_the_host_namespace() {
    if !can_run("host_network", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("hostnet");
    // A container without a network namespace of its own: nethook puts it on the host network.
    let mut b = sb.bundle(
        "hn",
        "echo '== links'; ip -o link; echo '== hosts'; cat /etc/hosts; echo '== hostname'; cat /etc/hostname; echo '== end'",
    );
    let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
    ns.retain(|n| n["type"] != "network");
    // Uts stays private so /etc/hostname is the container's own.
    let r = sb.runc_run(&b).ok();
    let out = r.stdout;
    // It sees the sandbox's links (no eth0 made for it, none left behind).
    let (links, rest) = out.split_once("== hosts").unwrap();
    assert!(!links.contains("eth0"), "{links}");
    assert!(rest.contains(&format!("127.0.1.1\t{}", b.id)), "{rest}");
    assert!(rest.contains(&b.id), "{rest}");
    // poststop removed its record; nothing else was ever made.
    assert!(sb.endpoint_files().is_empty(), "{:?}", sb.endpoint_files());
    assert!(sb.veths().is_empty());
    assert!(
        sb.nft_table().is_none(),
        "no firewall table for a host container"
    );

    // While it runs, ps shows it on the host network.
    let mut b2 = sb.bundle("hn2", "sleep 60");
    b2.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "network");
    let c = sb.runc_start(&b2);
    let rows = ps_rows_of(&sb, &c.id);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["network"], "host");
    sb.runc_stop(&c.id).ok();
    assert!(sb.endpoint_files().is_empty());

    // Asking for a bridge network without a namespace of its own is refused clearly.
    let mut b3 = sb.bundle("hn3", "true");
    b3.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "network");
    b3.annotate("nethook.network", "nethook");
    let r = sb.runc_run(&b3);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("linux.namespaces"), "{}", r.stderr);
    // And the host network for a container that has its own namespace.
    let mut b4 = sb.bundle("hn4", "true");
    b4.annotate("nethook.network", "host");
    let r = sb.runc_run(&b4);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("shares the host"), "{}", r.stderr);
    assert!(sb.endpoint_files().is_empty());
}

#[test]
fn none_network_has_only_loopback() {
    if !can_run("none_network", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("nonenet");
    let mut b = sb.bundle("nn", "sleep 60");
    b.annotate("nethook.network", "none");
    let c = sb.runc_start(&b);
    let links = Sandbox::links_in(&c.netns());
    let names: Vec<&str> = links.iter().filter_map(|l| l["ifname"].as_str()).collect();
    assert_eq!(names, vec!["lo"]);
    assert!(
        links[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP"),
        "lo is up: {}",
        links[0]
    );
    // lo works: a TCP connection inside the container over 127.0.0.1.
    sb.serve_in(&c.netns(), 7000, "lo-ok");
    assert_eq!(
        Sandbox::tcp_get_from(&c.netns(), Ipv4Addr::LOCALHOST, 7000).as_deref(),
        Some("lo-ok\n")
    );
    assert_eq!(ps_rows_of(&sb, &c.id)[0]["network"], "none");
    assert!(sb.lease_files().is_empty());
    sb.runc_stop(&c.id).ok();
    assert!(sb.endpoint_files().is_empty());
}

/// socat to `[ip]:port` over IPv6 from `netns`.
fn tcp6_get_from(netns: &str, ip: &str, port: u16) -> Option<String> {
    let r = run(
        Sandbox::cmd_in(netns, "socat").args([
            "-T",
            "3",
            "-u",
            &format!("TCP6:[{ip}]:{port},connect-timeout=3"),
            "STDOUT",
        ]),
        None,
    );
    (r.code == 0 && !r.stdout.is_empty()).then_some(r.stdout)
}

fn serve6_in(sb: &Sandbox, netns: &str, port: u16, reply: &str) {
    sb.spawn_in(
        netns,
        &[
            "socat",
            &format!("TCP6-LISTEN:{port},reuseaddr,fork,ipv6only=1"),
            &format!("SYSTEM:echo {reply}"),
        ],
    );
    sb.wait_listening(netns, port);
}

#[test]
fn dual_stack_containers_talk_over_ipv6_at_once() {
    if !can_run("dual_stack", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("ds");
    sb.nethook(&[
        "network",
        "create",
        "ds",
        "--subnet",
        "10.90.60.0/24",
        "--subnet",
        "fd00:60::/64",
    ])
    .ok();
    let mut b = sb.bundle("ds1", "sleep 60");
    b.annotate("nethook.network", "ds");
    let c = sb.runc_start(&b);
    let row = &ps_rows_of(&sb, &c.id)[0];
    let v6 = row["ipv6"][0]
        .as_str()
        .expect("an IPv6 address in ps")
        .to_string();
    let (v6, plen) = v6.split_once('/').unwrap();
    assert!(v6.starts_with("fd00:60::"), "{v6}");
    assert_eq!(plen, "64");
    // Usable as soon as the hook returned: not tentative (no DAD), default route via the
    // gateway.
    let addrs = ip_in(&c.netns(), &["-6", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains(v6), "{addrs}");
    assert!(!addrs.contains("tentative"), "{addrs}");
    let routes = ip_in(&c.netns(), &["-6", "route"]);
    assert!(
        routes.contains("default via fd00:60::1 dev eth0"),
        "{routes}"
    );

    serve6_in(&sb, &c.netns(), 8080, "v6-ok");
    // Host (sandbox) -> container over IPv6.
    assert_eq!(
        tcp6_get_from(&sb.path(), v6, 8080).as_deref(),
        Some("v6-ok\n")
    );
    // Container -> container over IPv6 on the same bridge.
    let mut b2 = sb.bundle("ds2", "sleep 60");
    b2.annotate("nethook.network", "ds");
    let c2 = sb.runc_start(&b2);
    assert_eq!(
        tcp6_get_from(&c2.netns(), v6, 8080).as_deref(),
        Some("v6-ok\n")
    );
    // /etc/hosts carries both addresses.
    let hosts = std::fs::read_to_string(b.rootfs().join("etc/hosts")).unwrap();
    assert!(hosts.contains(v6), "{hosts}");
    sb.runc_stop(&c.id).ok();
    sb.runc_stop(&c2.id).ok();
    sb.assert_no_endpoints();
}

#[test]
fn several_networks_and_live_connect_disconnect() {
    if !can_run("connect", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("conn");
    for (n, s) in [
        ("na", "10.90.71.0/24"),
        ("nb", "10.90.72.0/24"),
        ("nc", "10.90.73.0/24"),
    ] {
        sb.nethook(&["network", "create", n, "--subnet", s]).ok();
    }
    let mut b = sb.bundle("multi", "sleep 60");
    b.annotate("nethook.network", "na,nb");
    let c = sb.runc_start(&b);
    let rows = ps_rows_of(&sb, &c.id);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["interface"], "eth0");
    assert_eq!(rows[1]["interface"], "eth1");
    // One default route, from the first network.
    let routes = ip_in(&c.netns(), &["route"]);
    assert_eq!(routes.matches("default").count(), 1, "{routes}");
    assert!(
        routes.contains("default via 10.90.71.1 dev eth0"),
        "{routes}"
    );
    sb.serve_in(&c.netns(), 8080, "multi");
    for ip in [rows[0]["ipv4"][0].as_str(), rows[1]["ipv4"][0].as_str()] {
        let ip = addr_of(ip.unwrap());
        assert_eq!(sb.tcp_get(ip, 8080).as_deref(), Some("multi\n"), "{ip}");
    }

    // Connect a third network to the running container: eth2 appears with an address that
    // answers.
    sb.nethook(&["network", "connect", "nc", &c.id]).ok();
    let rows = ps_rows_of(&sb, &c.id);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let third = rows.iter().find(|r| r["network"] == "nc").unwrap();
    assert_eq!(third["interface"], "eth2");
    let ip3 = addr_of(third["ipv4"][0].as_str().unwrap());
    assert!(in_subnet(ip3, "10.90.73.0/24"));
    assert!(Sandbox::link_names_in(&c.netns()).contains("eth2"));
    assert_eq!(sb.tcp_get(ip3, 8080).as_deref(), Some("multi\n"));
    // Twice is refused, and so is a network that does not exist.
    sb.nethook(&["network", "connect", "nc", &c.id])
        .refused(&["already on network nc"]);
    sb.nethook(&["network", "connect", "nosuch", &c.id])
        .refused(&["nosuch", "does not exist"]);

    // Disconnect it again: the interface, its lease and its host link go; the rest stays.
    let host_if = third["host_interface"].as_str().unwrap().to_string();
    sb.nethook(&["network", "disconnect", "nc", &c.id]).ok();
    assert!(!Sandbox::link_names_in(&c.netns()).contains("eth2"));
    assert!(!sb.link_names().contains(&host_if));
    assert_eq!(sb.lease_holder("nc", ip3), None);
    assert!(sb.tcp_dead(ip3, 8080));
    assert_eq!(ps_rows_of(&sb, &c.id).len(), 2);
    sb.nethook(&["network", "disconnect", "nc", &c.id])
        .refused(&["not on network nc"]);
    // Reconnect reuses the free ethN name.
    sb.nethook(&["network", "connect", "nc", &c.id]).ok();
    assert!(Sandbox::link_names_in(&c.netns()).contains("eth2"));

    sb.runc_stop(&c.id).ok();
    sb.assert_no_endpoints();
}

#[test]
fn mtu_from_network_and_annotation() {
    if !can_run("mtu", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("mtu");
    sb.nethook(&[
        "network",
        "create",
        "small",
        "--subnet",
        "10.90.80.0/24",
        "--mtu",
        "1400",
    ])
    .ok();
    let mut b = sb.bundle("m1", "sleep 60");
    b.annotate("nethook.network", "small");
    let c = sb.runc_start(&b);
    let mtu_of = |ns: &str, dev: &str| -> u64 {
        Sandbox::links_in(ns)
            .into_iter()
            .find(|l| l["ifname"] == dev)
            .and_then(|l| l["mtu"].as_u64())
            .unwrap()
    };
    assert_eq!(mtu_of(&c.netns(), "eth0"), 1400);
    let mut b2 = sb.bundle("m2", "sleep 60");
    b2.annotate("nethook.network", "small");
    b2.annotate("nethook.mtu", "1300");
    let c2 = sb.runc_start(&b2);
    assert_eq!(mtu_of(&c2.netns(), "eth0"), 1300);
    let mut b3 = sb.bundle("m3", "true");
    b3.annotate("nethook.mtu", "12");
    let r = sb.runc_run(&b3);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("nethook.mtu"), "{}", r.stderr);
    sb.runc_stop(&c.id).ok();
    sb.runc_stop(&c2.id).ok();
    sb.assert_no_endpoints();
}

#[test]
fn labels_are_stored_shown_and_filtered() {
    if !can_run("labels", &[]) {
        return;
    }
    let sb = Sandbox::new("labels");
    sb.nethook(&[
        "network",
        "create",
        "web",
        "--subnet",
        "10.90.90.0/24",
        "--label",
        "team=web",
        "--label",
        "tier=front",
        "--opt",
        "com.example.x=1",
    ])
    .ok();
    sb.nethook(&[
        "network",
        "create",
        "db",
        "--subnet",
        "10.90.91.0/24",
        "--label",
        "team=db",
    ])
    .ok();
    let names = |filters: &[&str]| -> Vec<String> {
        let mut a = vec!["--format", "json", "network", "ls"];
        for f in filters {
            a.extend(["--filter", f]);
        }
        let r = sb.nethook(&a).ok();
        let v: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
        v.iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&["label=team=web"]), vec!["web"]);
    assert_eq!(names(&["label=team"]), vec!["db", "web"]);
    assert_eq!(names(&["label=team", "label=tier=front"]), vec!["web"]);
    assert_eq!(names(&["label=team=ops"]), Vec::<String>::new());
    assert_eq!(names(&["driver=bridge", "name=db"]), vec!["db"]);
    let r = sb.nethook(&["network", "inspect", "web"]).ok();
    assert!(r.stdout.contains("label:       team=web"), "{}", r.stdout);
    assert!(
        r.stdout.contains("option:      com.example.x=1"),
        "{}",
        r.stdout
    );
    sb.nethook(&["network", "ls", "--filter", "colour=red"])
        .refused(&["filter \"colour=red\""]);
    let _ = Duration::from_secs(0);
}

#[test]
fn macvlan_containers_resolve_each_other_by_name() {
    if !can_run("macvlan_dns", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("mvdns");
    let _peer = sb.add_lan();
    sb.create_macvlan("lan", &[]).ok();
    // gateway listening cannot work on macvlan (the host is unreachable from its children).
    sb.nethook(&[
        "network",
        "create",
        "lan2",
        "--driver",
        "macvlan",
        "--parent",
        "lan0",
        "--subnet",
        "192.168.78.0/24",
        "-o",
        "dns_listen=gateway",
    ])
    .refused(&["dns_listen=gateway", "macvlan"]);
    let mut b1 = sb.bundle("mvd1", "sleep 60");
    b1.annotate("nethook.network", "lan")
        .annotate("nethook.aliases", "db");
    let c1 = sb.runc_start(&b1);
    let mut b2 = sb.bundle("mvd2", "sleep 60");
    b2.annotate("nethook.network", "lan");
    let c2 = sb.runc_start(&b2);
    let ip1 = sb.ip_of(&c1.id).to_string();
    let resolv = sb.runc_exec(&c2, "cat /etc/resolv.conf").ok().stdout;
    assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    for q in [c1.id.as_str(), "db", &format!("{}.lan", c1.id)] {
        let ok = wait_until(Duration::from_secs(2), || {
            let r = sb.runc_exec(&c2, &format!("nslookup {q}"));
            r.code == 0 && r.stdout.contains(&ip1)
        });
        assert!(ok, "nslookup {q} in a macvlan container");
    }
    sb.runc_stop(&c1.id).ok();
    let gone = wait_until(Duration::from_secs(2), || {
        !sb.runc_exec(&c2, "nslookup db").stdout.contains(&ip1)
    });
    assert!(gone, "a stopped container's name stays");
    sb.runc_stop(&c2.id).ok();
}

/// Give the sandbox's peer IPv6 too: fd00:ff::1 (sandbox) / fd00:ff::2 (peer), the sandbox's
/// IPv6 default route via the peer. The peer has no route back to container networks.
fn peer6(sb: &Sandbox) -> Peer {
    let p = sb.add_peer();
    let sbn = sb.name.clone();
    for args in [
        vec![
            "-n",
            &sbn,
            "-6",
            "addr",
            "add",
            "fd00:ff::1/64",
            "dev",
            "nhtpeer0",
            "nodad",
        ],
        vec![
            "-n",
            &p.name,
            "-6",
            "addr",
            "add",
            "fd00:ff::2/64",
            "dev",
            "eth0",
            "nodad",
        ],
        vec![
            "-n",
            &sbn,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:ff::2",
        ],
    ] {
        run(Command::new("ip").args(&args), None).ok();
    }
    p
}

/// The client address a `serve6_source_in` server reported ("peer [fd00:00ff::...]").
fn peer_saw(got: &str) -> std::net::Ipv6Addr {
    let inner = got
        .split('[')
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap_or_else(|| panic!("no address in {got:?}"));
    inner
        .parse()
        .unwrap_or_else(|_| panic!("bad address in {got:?}"))
}

fn serve6_source_in(sb: &Sandbox, netns: &str, port: u16, tag: &str) {
    serve6_in(sb, netns, port, &format!("{tag} $SOCAT_PEERADDR"));
}

#[test]
fn ipv6_masquerade_publish_and_routed_networks() {
    if !can_run("ipv6_nat", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("v6nat");
    let peer = peer6(&sb);
    sb.nethook(&[
        "network",
        "create",
        "ds",
        "--subnet",
        "10.90.61.0/24",
        "--subnet",
        "fd00:61::/64",
    ])
    .ok();
    serve6_source_in(&sb, &peer.path(), 9090, "peer");
    let mut b = sb.bundle("v6n", "sleep 60");
    b.annotate("nethook.network", "ds")
        .annotate("nethook.publish", "8080:80");
    let c = sb.runc_start(&b);
    // Out: masqueraded to the sandbox's own address on the peer link.
    let got = tcp6_get_from(&c.netns(), "fd00:ff::2", 9090).expect("container -> v6 peer");
    assert_eq!(
        peer_saw(&got),
        "fd00:ff::1".parse::<std::net::Ipv6Addr>().unwrap()
    );
    // In: the published port answers over IPv6 and IPv4 from the peer, to the same container.
    sb.spawn_in(
        &c.netns(),
        &["socat", "TCP6-LISTEN:80,reuseaddr,fork", "SYSTEM:echo web"],
    );
    sb.wait_listening(&c.netns(), 80);
    assert_eq!(
        tcp6_get_from(&peer.path(), "fd00:ff::1", 8080).as_deref(),
        Some("web\n")
    );
    assert_eq!(
        Sandbox::tcp_get_from(&peer.path(), peer.sandbox_ip, 8080).as_deref(),
        Some("web\n")
    );
    // [::1] cannot be forwarded by the kernel: refused in one line, nothing made.
    let mut bad = sb.bundle("v6bad", "true");
    bad.annotate("nethook.network", "ds")
        .annotate("nethook.publish", "[::1]:8081:80");
    let r = sb.runc_run(&bad);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("::1"), "{}", r.stderr);
    sb.runc_stop(&c.id).ok();
    sb.assert_no_endpoints();
    assert!(
        tcp6_get_from(&peer.path(), "fd00:ff::1", 8080).is_none(),
        "the forward outlived its container"
    );

    // A routed network (--no-masquerade): the peer sees the container's own address once it
    // has a route back.
    sb.nethook(&[
        "network",
        "create",
        "routed",
        "--subnet",
        "10.90.62.0/24",
        "--subnet",
        "fd00:62::/64",
        "--no-masquerade",
    ])
    .ok();
    run(
        Command::new("ip").args([
            "-n",
            &peer.name,
            "-6",
            "route",
            "add",
            "fd00:62::/64",
            "via",
            "fd00:ff::1",
        ]),
        None,
    )
    .ok();
    let mut b2 = sb.bundle("v6r", "sleep 60");
    b2.annotate("nethook.network", "routed");
    let c2 = sb.runc_start(&b2);
    let v6 = ps_rows_of(&sb, &c2.id)[0]["ipv6"][0]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let got = tcp6_get_from(&c2.netns(), "fd00:ff::2", 9090).expect("routed container -> peer");
    assert_eq!(peer_saw(&got), v6.parse::<std::net::Ipv6Addr>().unwrap());
    sb.runc_stop(&c2.id).ok();
    sb.assert_no_endpoints();
}

/// Mbit/s iperf3 measured from `netns` to `server` (JSON report), `reverse` for the other way.
fn iperf_mbit(netns: &str, server: Ipv4Addr, reverse: bool) -> f64 {
    let mut c = Sandbox::cmd_in(netns, "iperf3");
    c.args(["-c", &server.to_string(), "-t", "3", "-O", "1", "-J"]);
    if reverse {
        c.arg("-R");
    }
    let r = run(&mut c, None).ok();
    let v: Value = serde_json::from_str(&r.stdout).expect("iperf3 JSON");
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bits_per_second")
        / 1e6
}

#[test]
fn tuning_sysctls_offloads_and_bandwidth() {
    if !can_run(
        "tuning_e2e",
        &["runc", "busybox", "ethtool", "iperf3", "socat", "nft", "ss"],
    ) {
        return;
    }
    let sb = Sandbox::new("tune");
    sb.nethook(&[
        "network",
        "create",
        "shaped",
        "--subnet",
        "10.90.85.0/24",
        "-o",
        "sysctl.net.core.somaxconn=1024",
        "-o",
        "offload.tso=off",
        "-o",
        "bandwidth.egress=20mbit",
        "-o",
        "allow_host_ports=5201",
    ])
    .ok();
    // Bad tuning is refused at create time, naming the key.
    sb.nethook(&[
        "network",
        "create",
        "bad",
        "--subnet",
        "10.90.86.0/24",
        "-o",
        "sysctl.kernel.core_pattern=x",
    ])
    .refused(&["kernel.core_pattern"]);
    sb.nethook(&[
        "network",
        "create",
        "bad",
        "--subnet",
        "10.90.86.0/24",
        "-o",
        "bandwidth.egress=fast",
    ])
    .refused(&["bandwidth.egress"]);
    sb.nethook(&[
        "network",
        "create",
        "bad",
        "--subnet",
        "10.90.86.0/24",
        "--ipv6",
        "--mtu",
        "1200",
    ])
    .refused(&["1280"]);

    let mut b = sb.bundle("tn", "sleep 60");
    b.annotate("nethook.network", "shaped")
        .annotate("nethook.sysctl.net.ipv4.tcp_syncookies", "0")
        .annotate("nethook.bandwidth.ingress", "10mbit");
    let c = sb.runc_start(&b);
    // Sysctls: the network's and the container's own, inside the container only.
    let r = sb
        .runc_exec(
            &c,
            "cat /proc/sys/net/core/somaxconn /proc/sys/net/ipv4/tcp_syncookies",
        )
        .ok();
    assert_eq!(
        r.stdout.split_whitespace().collect::<Vec<_>>(),
        vec!["1024", "0"]
    );
    let host_syn = sb
        .sh(&["cat", "/proc/sys/net/ipv4/tcp_syncookies"])
        .ok()
        .stdout;
    assert_eq!(host_syn.trim(), "1", "the host's value stays");
    // Offloads, as ethtool shows them.
    let k = run(
        Sandbox::cmd_in(&c.netns(), "ethtool").args(["-k", "eth0"]),
        None,
    )
    .ok();
    assert!(
        k.stdout.contains("tcp-segmentation-offload: off"),
        "{}",
        k.stdout
    );
    // Bandwidth: measured with iperf3 against a server on the host (the gateway).
    sb.spawn_in(&sb.path(), &["iperf3", "-s", "-p", "5201"]);
    sb.wait_listening(&sb.path(), 5201);
    let gw = Ipv4Addr::new(10, 90, 85, 1);
    let up = iperf_mbit(&c.netns(), gw, false);
    assert!(
        (18.0..=22.0).contains(&up),
        "egress {up:.1} Mbit/s, limit 20"
    );
    let down = iperf_mbit(&c.netns(), gw, true);
    assert!(
        (9.0..=11.0).contains(&down),
        "ingress {down:.1} Mbit/s, limit 10"
    );
    // Bad annotations fail the container with one line, nothing left.
    let mut bad = sb.bundle("tnbad", "true");
    bad.annotate("nethook.sysctl.vm.swappiness", "1");
    let r = sb.runc_run(&bad);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("vm.swappiness"), "{}", r.stderr);
    sb.runc_stop(&c.id).ok();
    sb.assert_no_endpoints();
}

#[test]
fn macvlan_private_mode_keeps_siblings_apart() {
    if !can_run("macvlan_private", RUNC_TOOLS) {
        return;
    }
    let sb = Sandbox::new("mvp");
    let peer = sb.add_lan();
    sb.create_macvlan("priv", &["--mode", "private"]).ok();
    let mut b1 = sb.bundle("mvp1", "sleep 60");
    b1.annotate("nethook.network", "priv");
    let c1 = sb.runc_start(&b1);
    let mut b2 = sb.bundle("mvp2", "sleep 60");
    b2.annotate("nethook.network", "priv");
    let c2 = sb.runc_start(&b2);
    let eth0 = Sandbox::links_in(&c1.netns())
        .into_iter()
        .find(|l| l["ifname"] == "eth0")
        .unwrap();
    assert_eq!(eth0["linkinfo"]["info_data"]["mode"], "private");
    let ip1 = sb.ip_of(&c1.id);
    sb.serve_in(&c1.netns(), 8080, "p");
    // The segment reaches it; its sibling on the same parent does not.
    assert_eq!(
        Sandbox::tcp_get_from(&peer, ip1, 8080).as_deref(),
        Some("p\n")
    );
    assert!(
        Sandbox::tcp_dead_from(&c2.netns(), ip1, 8080),
        "private siblings talked"
    );
    sb.runc_stop(&c1.id).ok();
    sb.runc_stop(&c2.id).ok();
}

#[test]
fn default_mtu_follows_the_default_route_interface() {
    if !can_run("default_mtu", &[]) {
        return;
    }
    let sb = Sandbox::new("dmtu");
    let _peer = sb.add_peer();
    // The sandbox's default route leaves by nhtpeer0; give it a tunnel-like MTU.
    sb.sh(&["ip", "link", "set", "nhtpeer0", "mtu", "1420"])
        .ok();
    sb.nethook(&["network", "create", "auto", "--subnet", "10.90.95.0/24"])
        .ok();
    let r = sb
        .nethook(&["--format", "json", "network", "inspect", "auto"])
        .ok();
    let v: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["mtu"], 1420, "{}", r.stdout);
    // An explicit one wins.
    sb.nethook(&[
        "network",
        "create",
        "given",
        "--subnet",
        "10.90.96.0/24",
        "--mtu",
        "1300",
    ])
    .ok();
    let r = sb
        .nethook(&["--format", "json", "network", "inspect", "given"])
        .ok();
    let v: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["mtu"], 1300);
}
