//! `nethook doctor`, `check` and `gc` as an operator sees them.

mod common;
use common::*;

#[test]
fn doctor_reports_a_foreign_forward_drop_and_passes_otherwise() {
    if !can_run("doctor", &["ip", "nft", "nsenter"]) {
        return;
    }
    let sb = Sandbox::new("doc");
    let r = sb.nethook(&["doctor"]).ok();
    assert!(
        r.stdout
            .contains("no other forward chain with a drop policy"),
        "{}",
        r.stdout
    );
    // What Docker's iptables (nft backend) leaves: a forward chain with policy drop.
    sb.sh(&["nft", "add", "table", "ip", "filter"]).ok();
    sb.sh(&[
        "nft",
        "add",
        "chain",
        "ip",
        "filter",
        "FORWARD",
        "{ type filter hook forward priority 0; policy drop; }",
    ])
    .ok();
    let r = sb.nethook(&["doctor"]).ok();
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("other firewalls"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.starts_with("warn") && line.contains("ip filter FORWARD"),
        "{}",
        r.stdout
    );
    let j: serde_json::Value =
        serde_json::from_str(&sb.nethook(&["--format", "json", "doctor"]).ok().stdout).unwrap();
    assert!(j
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["level"] == "warn" && i["check"] == "other firewalls"));
}

#[test]
fn check_finds_a_gone_container_and_gc_releases_it() {
    if !can_run("gc", &["ip", "nft", "nsenter"]) {
        return;
    }
    let sb = Sandbox::new("gc");
    let ns = sb.add_netns("c");
    sb.nethook(&["attach", &format!("/run/netns/{ns}"), "--id", "gone"])
        .ok();
    sb.nethook(&["check"]).ok();
    let ip = sb.ip_of("gone");
    // The container's namespace disappears without a poststop (runc killed with -9, say).
    run(
        std::process::Command::new("ip").args(["netns", "del", &ns]),
        None,
    )
    .ok();
    assert!(wait_until(std::time::Duration::from_secs(5), || sb
        .nethook(&["check"])
        .code
        == 1));
    let r = sb.nethook(&["check"]);
    assert!(r.stdout.contains("gone: host link"), "{}", r.stdout);
    let r = sb.nethook(&["gc", "--dry-run"]).ok();
    assert!(r.stdout.contains("would release gone"), "{}", r.stdout);
    assert_eq!(sb.ps().len(), 1, "dry run changed something");
    sb.nethook(&["gc"]).ok();
    assert!(sb.ps().is_empty());
    assert!(sb.lease_files().is_empty(), "{:?}", sb.lease_files());
    assert!(wait_until(std::time::Duration::from_secs(3), || !sb.masq4_has(ip)));
    sb.nethook(&["check"]).ok();
}

#[test]
fn doctor_reports_forwarding_and_kernel_features_and_leaves_nothing() {
    if !can_run("doctor_fwd", &["ip", "nft", "nsenter"]) {
        return;
    }
    let sb = Sandbox::new("docfwd");
    let line = |out: &str, check: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(check))
            .unwrap_or_default()
            .to_string()
    };
    sb.sh(&["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"])
        .ok();
    let r = sb.nethook(&["doctor"]).ok();
    assert!(
        line(&r.stdout, "ip_forward").starts_with("warn"),
        "{}",
        r.stdout
    );
    sb.sh(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        .ok();
    let r = sb.nethook(&["doctor"]).ok();
    assert!(
        line(&r.stdout, "ip_forward").starts_with("ok"),
        "{}",
        r.stdout
    );
    // The kernel probe ran in a scratch namespace: bridge and veth reported, nothing left here.
    for kind in ["bridge", "veth"] {
        assert!(
            line(&r.stdout, kind).starts_with("ok"),
            "{kind}: {}",
            r.stdout
        );
    }
    for kind in ["vxlan", "macvlan", "ipvlan"] {
        assert!(
            !line(&r.stdout, kind).is_empty(),
            "{kind} not reported: {}",
            r.stdout
        );
    }
    assert_eq!(
        sb.link_names(),
        ["lo".to_string()].into_iter().collect(),
        "doctor left links behind"
    );
}
