//! `nethook network create | ls | inspect | rm`, inside a sandbox (rm deletes the network's
//! bridge in the namespace it runs in).

mod common;

use common::*;
use serde_json::{json, Value};

fn json_of(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{}: {e}: {}", r.what, r.stdout))
}

#[test]
fn create_ls_inspect_rm() {
    if !can_run("network_cli", &[]) {
        return;
    }
    let sb = Sandbox::new("net");
    let r = sb
        .nethook(&[
            "network",
            "create",
            "web",
            "--subnet",
            "10.90.3.0/24",
            "--label",
            "team=a",
        ])
        .ok();
    assert_eq!(r.stdout.trim(), "web");
    let file = sb.config_dir.join("networks/web.json");
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["name"], "web");
    assert_eq!(stored["driver"], "bridge");
    assert_eq!(stored["subnets"][0]["subnet"], "10.90.3.0/24");
    assert_eq!(stored["subnets"][0]["gateway"], "10.90.3.1");

    // ls, table: header and a row naming it with its subnet and gateway.
    let ls = sb.nethook(&["network", "ls"]).ok();
    let lines: Vec<&str> = ls.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", ls.stdout);
    for h in ["NAME", "DRIVER", "SUBNET", "GATEWAY"] {
        assert!(lines[0].split_whitespace().any(|w| w == h), "{}", lines[0]);
    }
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cells[0], "web");
    for want in ["bridge", "10.90.3.0/24", "10.90.3.1"] {
        assert!(cells.contains(&want), "{want} not in {cells:?}");
    }
    // ls, JSON: the network objects as stored.
    let ls = sb.nethook(&["--format", "json", "network", "ls"]).ok();
    assert_eq!(json_of(&ls), json!([stored.clone()]));
    // inspect, JSON: the same.
    let ins = sb
        .nethook(&["--format", "json", "network", "inspect", "web"])
        .ok();
    assert_eq!(json_of(&ins), json!([stored.clone()]));
    // inspect, table: readable and names the subnet.
    let ins = sb.nethook(&["network", "inspect", "web"]).ok();
    assert!(ins.stdout.contains("10.90.3.0/24"), "{}", ins.stdout);
    assert!(ins.stdout.contains("web"), "{}", ins.stdout);
    // A second network shows up in ls too, sorted.
    sb.nethook(&["network", "create", "app", "--subnet", "10.90.4.0/24"])
        .ok();
    let names: Vec<Value> = json_of(&sb.nethook(&["--format", "json", "network", "ls"]).ok())
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("app"), json!("web")]);
    // Inspecting a missing one names it.
    sb.nethook(&["network", "inspect", "nope"])
        .refused(&["network nope", "does not exist"]);
    sb.nethook(&["network", "rm", "nope"])
        .refused(&["network nope", "does not exist"]);

    // rm with nothing attached.
    let rm = sb.nethook(&["network", "rm", "app"]).ok();
    assert_eq!(rm.stdout.trim(), "app");
    assert!(!sb.config_dir.join("networks/app.json").exists());
    let ls = sb.nethook(&["--format", "json", "network", "ls"]).ok();
    assert_eq!(json_of(&ls), json!([stored]));
}

#[test]
fn rm_is_refused_while_in_use_unless_forced() {
    if !can_run("network_rm", &[]) {
        return;
    }
    let sb = Sandbox::new("netrm");
    sb.nethook(&["network", "create", "web", "--subnet", "10.90.3.0/24"])
        .ok();
    let x = sb.add_netns("x");
    let xp = format!("/run/netns/{x}");
    sb.nethook(&["attach", &xp, "--network", "web", "--id", "user1"])
        .ok();
    let ip = sb.ip_of("user1");
    let bridge: Vec<String> = sb
        .links()
        .into_iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "bridge")
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .collect();
    assert_eq!(bridge.len(), 1, "one bridge for web");
    let veths = sb.veths();
    assert_eq!(veths.len(), 1);

    sb.nethook(&["network", "rm", "web"])
        .refused(&["network web", "in use", "user1", "--force"]);
    // Nothing changed.
    assert!(sb.config_dir.join("networks/web.json").exists());
    assert_eq!(sb.ps_row("user1")["state"], "ready");
    assert_eq!(sb.veths(), veths);
    assert!(Sandbox::link_names_in(&xp).contains("eth0"));

    sb.nethook(&["network", "rm", "web", "--force"]).ok();
    assert!(!sb.config_dir.join("networks/web.json").exists());
    assert_eq!(
        json_of(&sb.nethook(&["--format", "json", "network", "ls"]).ok()),
        json!([])
    );
    // The endpoint went with it: record, lease, veth, the namespace's eth0, and the bridge.
    sb.assert_no_endpoints();
    assert_eq!(sb.ps(), Vec::<Value>::new());
    assert!(!Sandbox::link_names_in(&xp).contains("eth0"));
    assert!(
        !sb.link_names().contains(&bridge[0]),
        "bridge {} left",
        bridge[0]
    );
    assert!(
        wait_until(std::time::Duration::from_secs(5), || !sb.masq4_has(ip)),
        "masq4 still holds {ip}"
    );
    // Detaching the gone endpoint afterwards is fine.
    sb.nethook(&["detach", "user1"]).ok();
}

#[test]
fn overlapping_or_duplicate_networks_are_refused() {
    if !can_run("network_overlap", &[]) {
        return;
    }
    let sb = Sandbox::new("netov");
    sb.nethook(&["network", "create", "web", "--subnet", "10.90.3.0/24"])
        .ok();
    for (name, subnet) in [
        ("wide", "10.90.0.0/16"),
        ("narrow", "10.90.3.128/25"),
        ("same", "10.90.3.0/24"),
    ] {
        sb.nethook(&["network", "create", name, "--subnet", subnet])
            .refused(&["overlaps", "web"]);
        assert!(!sb.config_dir.join(format!("networks/{name}.json")).exists());
    }
    sb.nethook(&["network", "create", "web", "--subnet", "10.90.5.0/24"])
        .refused(&["network web", "already exists"]);
    sb.nethook(&[
        "network",
        "create",
        "other",
        "--subnet",
        "10.90.6.0/24",
        "--bridge",
        "nh-web",
    ])
    .refused(&["nh-web"]);
    // The original is as it was; a disjoint one is fine.
    sb.nethook(&["network", "create", "next", "--subnet", "10.90.4.0/24"])
        .ok();
    assert_eq!(
        list_dir(&sb.config_dir.join("networks")),
        vec!["next.json".to_string(), "web.json".to_string()]
    );
    let ins = sb
        .nethook(&["--format", "json", "network", "inspect", "web"])
        .ok();
    assert_eq!(json_of(&ins)[0]["subnets"][0]["subnet"], "10.90.3.0/24");
}

#[test]
fn names_with_slash_or_dotdot_are_refused() {
    if !can_run("network_names", &[]) {
        return;
    }
    let sb = Sandbox::new("netname");
    for name in ["../evil", "a/b", "..", ".", "/evil", "Web", ""] {
        sb.nethook(&["network", "create", name, "--subnet", "10.90.3.0/24"])
            .refused(&["network name"]);
        sb.nethook(&["network", "inspect", name])
            .refused(&["network name"]);
        sb.nethook(&["network", "rm", name])
            .refused(&["network name"]);
    }
    // Nothing was written, in the config dir or next to it.
    assert_eq!(
        list_dir(&sb.config_dir.join("networks")),
        Vec::<String>::new()
    );
    assert!(!sb.config_dir.join("evil.json").exists());
    assert!(!sb.dir.join("evil.json").exists());
    assert!(!std::path::Path::new("/evil.json").exists());
}
