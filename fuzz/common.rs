//! The entry points the fuzz targets drive, shared (by `#[path]`) with the stable corpus
//! replay in `tests/fuzz_corpus.rs`, so both call exactly the same code. Each function takes
//! arbitrary bytes; any `Err` is fine, a panic is a bug.
#![allow(dead_code)]

use nethook::config::{DriverKind, Network, NetworkSpec};
use nethook::dns::answer::{self, Via};
use nethook::dns::records::Records;
use nethook::names::{ContainerId, IfName, Mac, NetworkName};
use nethook::oci::{self, BundleConfig, HookArgs};
use nethook::state::endpoint::{Attachment, Endpoint, EpState};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::OnceLock;

fn net(name: &str, subnets: &[&str], internal: bool) -> Network {
    NetworkSpec {
        name: name.into(),
        subnets: subnets.iter().map(|s| s.to_string()).collect(),
        internal,
        ..Default::default()
    }
    .build(None)
    .expect("fuzz fixture network")
}

fn ep(id: &str, aliases: &[&str], on: &[(&str, &str, Option<&str>)]) -> Endpoint {
    Endpoint {
        id: ContainerId::new(id).unwrap(),
        state: EpState::Ready,
        pid: 1,
        netns: "/x".into(),
        netns_id: None,
        hostname: id.into(),
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        files: vec![],
        source: "attach".into(),
        attachments: on
            .iter()
            .map(|(n, ip, ip6)| Attachment {
                network: NetworkName::new(n).unwrap(),
                interface: IfName::new("eth0").unwrap(),
                host_interface: IfName::new("vh").unwrap(),
                ipv4: ip.parse().unwrap(),
                prefix_len: 24,
                gateway: "0.0.0.0".parse().unwrap(),
                mac: Mac([2, 0, 0, 0, 0, 1]),
                masquerade: true,
                driver: DriverKind::Bridge,
                ipv6: ip6.map(|s| s.parse().unwrap()),
                prefix_len6: ip6.map(|_| 64),
                gateway6: None,
                mtu: None,
                tuning: Default::default(),
            })
            .collect(),
        netmode: None,
        owner: None,
        container: None,
        ports: vec![],
        created: 0,
    }
}

/// A small fixed set of records: a v4 network, an internal one, a dual-stack one.
pub fn records() -> &'static Records {
    static R: OnceLock<Records> = OnceLock::new();
    R.get_or_init(|| {
        let nets = vec![
            net("a", &["10.1.0.0/24"], false),
            net("int", &["10.3.0.0/24"], true),
            net("ds", &["10.5.0.0/24", "fd00:5::/64"], false),
        ];
        let eps = vec![
            ep("web", &["www", "Front"], &[("a", "10.1.0.2", None)]),
            ep("secret", &[], &[("int", "10.3.0.2", None)]),
            ep(
                "mixed",
                &["six"],
                &[
                    ("a", "10.1.0.4", None),
                    ("ds", "10.5.0.4", Some("fd00:5::4")),
                ],
            ),
        ];
        Records::build(&eps, &nets)
    })
}

/// The DNS daemon's answer path, as every listener kind and transport would call it.
pub fn dns_query(data: &[u8]) {
    let r = records();
    let gw: Ipv4Addr = "10.1.0.1".parse().unwrap();
    let inside = r.in_container();
    for udp in [true, false] {
        // Known asker on a gateway listener, and an unknown one.
        let _ = answer::handle(r, gw, "10.1.0.2".parse().unwrap(), data, udp);
        let _ = answer::handle(r, gw, "192.0.2.7".parse().unwrap(), data, udp);
        // In-container listener of each endpoint.
        for c in &inside {
            let _ = answer::handle_via(r, Via::Endpoint(&c.key), data, udp);
        }
    }
    let _ = answer::servfail(data);
}

/// The hook's stdin: the runtime's state JSON.
pub fn oci_state(data: &[u8]) {
    let _ = oci::parse_state(data);
}

/// The bundle's config.json, its accessors, and the annotations merged into what it wants.
pub fn bundle_config(data: &[u8]) {
    let Ok(cfg) = serde_json::from_slice::<BundleConfig>(data) else {
        return;
    };
    let _ = cfg.rootfs(Path::new("/bundle"));
    let _ = cfg.netns();
    for dest in ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"] {
        let _ = cfg.bind_source(dest);
    }
    let _ = oci::wants(&HookArgs::default(), &cfg.annotations, "nethook");
    let args = HookArgs {
        networks: vec!["a".into(), "b".into()],
        publish: vec!["8080:80".into()],
        ip: Some("10.1.0.9".into()),
        mac: Some("02:00:00:00:00:09".into()),
        aliases: vec!["x".into()],
    };
    let _ = oci::wants(&args, &cfg.annotations, "nethook");
}

/// `-p`/`nethook.publish` specs.
pub fn publish_spec(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = nethook::publish::parse(s) {
        let ips = ["10.1.0.2".parse().unwrap(), "fd00:5::2".parse().unwrap()];
        let _ = spec.targets(&ips, s);
    }
}
