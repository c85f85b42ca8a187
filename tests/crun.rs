//! End to end under crun: busybox containers run by `crun` (through contrib/crun-wrapper, which
//! this host's hybrid cgroup layout needs) inside a sandbox netns, with nethook as their
//! createRuntime and poststop hooks. crun differs from runc where a hook can notice: the state
//! says `created` already at createRuntime, poststop gets `pid: 0`, the state carries a `root`
//! key, hook output is thrown away unless the `run.oci.hooks.stdout/stderr` annotations name
//! files, and a failing createRuntime runs no poststop at all (nethook's own rollback is all
//! that cleans up). What is checked is what a user sees.

mod common;

use common::*;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

const WRAPPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/crun-wrapper");

/// What the crun tests need: runc's tools (the bundle comes from `runc spec`) and crun.
fn can_run_crun(test: &str) -> bool {
    let mut tools = RUNC_TOOLS.to_vec();
    tools.push("crun");
    can_run(test, &tools)
}

/// crun with its state in the sandbox's temp dir; deletes its containers at drop (before the
/// sandbox goes, as it is declared after it).
struct Crun<'a> {
    sb: &'a Sandbox,
    root: PathBuf,
    ids: Mutex<Vec<String>>,
}

impl<'a> Crun<'a> {
    fn new(sb: &'a Sandbox) -> Crun<'a> {
        Crun {
            sb,
            root: sb.dir.join("crun-root"),
            ids: Mutex::new(Vec::new()),
        }
    }

    /// `crun-wrapper --root DIR ARGS` inside the sandbox.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.sb.cmd(WRAPPER);
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    /// A bundle whose hook output goes to files in the bundle (crun discards it otherwise).
    fn bundle(&self, short: &str, script: &str) -> Bundle {
        let mut b = self.sb.bundle(short, script);
        let out = b.dir.join("hooks.stdout").to_string_lossy().into_owned();
        let err = b.dir.join("hooks.stderr").to_string_lossy().into_owned();
        b.annotate("run.oci.hooks.stdout", &out)
            .annotate("run.oci.hooks.stderr", &err);
        b
    }

    fn track(&self, id: &str) {
        self.ids.lock().unwrap().push(id.to_string());
    }

    /// `crun run` in the foreground: the container's output and crun's exit code.
    fn run(&self, b: &Bundle) -> Run {
        b.write();
        self.track(&b.id);
        let bundle = b.dir.to_string_lossy().into_owned();
        run_timeout(
            &mut self.cmd(&["run", "--bundle", &bundle, &b.id]),
            None,
            Duration::from_secs(60),
        )
    }

    /// `crun create` + `crun start`, the container's stdio to a file in the bundle.
    fn start(&self, b: &Bundle) -> Ctr {
        b.write();
        self.track(&b.id);
        let bundle = b.dir.to_string_lossy().into_owned();
        let log = b.dir.join("ctr.log");
        let f = std::fs::File::create(&log).unwrap();
        let st = self
            .cmd(&["create", "--bundle", &bundle, &b.id])
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .status()
            .expect("crun create");
        assert!(
            st.success(),
            "crun create {} failed: {}\nhook stderr: {}",
            b.id,
            std::fs::read_to_string(&log).unwrap_or_default(),
            hook_stderr(b)
        );
        run(&mut self.cmd(&["start", &b.id]), None).ok();
        let pid = self.state(&b.id).expect("crun state")["pid"]
            .as_u64()
            .expect("pid in crun state") as u32;
        Ctr {
            id: b.id.clone(),
            pid,
        }
    }

    fn state(&self, id: &str) -> Option<Value> {
        let r = run(&mut self.cmd(&["state", id]), None);
        if r.code != 0 {
            return None;
        }
        serde_json::from_str(&r.stdout).ok()
    }

    /// The ids `crun list` shows.
    fn list(&self) -> Vec<String> {
        let r = run(&mut self.cmd(&["list", "--quiet"]), None).ok();
        r.stdout.split_whitespace().map(String::from).collect()
    }

    fn exec(&self, c: &Ctr, script: &str) -> Run {
        run(
            &mut self.cmd(&["exec", &c.id, "/bin/sh", "-c", script]),
            None,
        )
    }

    /// `crun kill ID KILL`, wait until it stopped, `crun delete ID` (poststop runs here).
    fn stop(&self, id: &str) -> Run {
        let _ = run(&mut self.cmd(&["kill", id, "KILL"]), None);
        let stopped = wait_until(Duration::from_secs(10), || {
            self.state(id)
                .is_none_or(|s| s["status"].as_str() != Some("running"))
        });
        assert!(stopped, "container {id} did not stop");
        let r = run(&mut self.cmd(&["delete", id]), None);
        self.ids.lock().unwrap().retain(|c| c != id);
        r
    }
}

impl Drop for Crun<'_> {
    fn drop(&mut self) {
        let ids: Vec<String> = self.ids.get_mut().map(std::mem::take).unwrap_or_default();
        for id in ids {
            let _ = run(&mut self.cmd(&["kill", &id, "KILL"]), None);
            let _ = run(&mut self.cmd(&["delete", "-f", &id]), None);
        }
    }
}

/// What nethook printed on stderr as a hook of this bundle (crun writes it to the file the
/// `run.oci.hooks.stderr` annotation names).
fn hook_stderr(b: &Bundle) -> String {
    std::fs::read_to_string(b.dir.join("hooks.stderr")).unwrap_or_default()
}

fn hook_stdout(b: &Bundle) -> String {
    std::fs::read_to_string(b.dir.join("hooks.stdout")).unwrap_or_default()
}

/// The word after `key` in `text` ("inet" -> "10.89.0.2/16").
fn word_after<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let mut it = text.split_whitespace();
    while let Some(w) = it.next() {
        if w == key {
            return it.next();
        }
    }
    None
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

/// Everything nethook keeps, to show that something changed nothing.
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
fn container_under_crun_is_networked_reachable_and_leaves_nothing() {
    if !can_run_crun("crun_default_network") {
        return;
    }
    let sb = Sandbox::new("crun");
    let crun = Crun::new(&sb);
    let mut b = crun.bundle("crun", "exec nc -ll -p 8080 -e echo hello-from-crun");
    // A second hook per stage records the state crun gives hooks: the test must really see
    // crun's shape (status `created` at createRuntime, `root`, pid 0 at poststop).
    for stage in ["createRuntime", "poststop"] {
        let file = b.dir.join(format!("{stage}.state"));
        b.config["hooks"][stage]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "path": "/bin/sh",
                "args": ["sh", "-c", format!("cat > {}", file.display())],
            }));
    }
    let c = crun.start(&b);
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(b.dir.join("createRuntime.state")).unwrap())
            .unwrap();
    assert_eq!(st["status"], "created", "crun's createRuntime state: {st}");
    assert!(st["root"].is_string(), "crun's createRuntime state: {st}");
    assert_eq!(st["pid"], c.pid, "crun's createRuntime state: {st}");
    sb.wait_listening_ctr(&c, 8080);

    let row = sb.ps_row(&c.id);
    assert_eq!(row["state"], "ready");
    let ip = sb.ip_of(&c.id);
    assert!(in_subnet(ip, "10.89.0.0/16"), "{ip}");
    let host_if = row["host_interface"].as_str().unwrap().to_string();
    let link = sb
        .links()
        .into_iter()
        .find(|l| l["ifname"] == host_if.as_str())
        .unwrap_or_else(|| panic!("{host_if} not in the sandbox"));
    assert_eq!(link["master"], "nethook0");

    // The container's own view, printed from inside it.
    let r = crun
        .exec(
            &c,
            "ip -o -4 addr show dev eth0; echo '=='; ip route | grep '^default'; echo '=='; \
             cat /etc/hostname; echo '=='; cat /etc/hosts",
        )
        .ok();
    let parts: Vec<&str> = r.stdout.split("==\n").collect();
    assert_eq!(parts.len(), 4, "{}", r.stdout);
    assert_eq!(
        word_after(parts[0], "inet"),
        Some(format!("{ip}/16").as_str())
    );
    assert!(
        parts[1].starts_with("default via 10.89.0.1 dev eth0"),
        "route: {}",
        parts[1]
    );
    assert_eq!(parts[2].trim(), b.hostname());
    assert!(
        hosts_names(parts[3], ip, &[&b.hostname()]),
        "/etc/hosts does not name {} at {ip}:\n{}",
        b.hostname(),
        parts[3]
    );

    // The sandbox ("the host") reaches it; it is masqueraded outward.
    assert_eq!(
        sb.tcp_get(ip, 8080).as_deref().map(str::trim),
        Some("hello-from-crun"),
        "the sandbox cannot reach {ip}:8080"
    );
    assert!(sb.masq4_has(ip), "masq4 has no element {ip}");

    // `crun delete` runs poststop (with pid 0): everything goes.
    crun.stop(&c.id).ok();
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(b.dir.join("poststop.state")).unwrap())
            .unwrap();
    assert_eq!(
        (&st["status"], &st["pid"]),
        (&"stopped".into(), &0.into()),
        "{st}"
    );
    sb.assert_gone(&c.id, ip, &host_if);
    sb.assert_no_endpoints();
    assert!(sb.tcp_dead(ip, 8080), "{ip} still answers");
    assert!(crun.list().is_empty(), "crun list: {:?}", crun.list());
    // The hooks were silent throughout.
    assert_eq!(hook_stdout(&b), "", "hooks wrote on stdout");
    assert_eq!(hook_stderr(&b), "", "hooks complained");
}

#[test]
fn annotations_reach_nethook_through_crun_and_crun_run_cleans_up() {
    if !can_run_crun("crun_annotations") {
        return;
    }
    let sb = Sandbox::new("crunann");
    let crun = Crun::new(&sb);
    sb.nethook(&["network", "create", "web", "--subnet", "10.90.3.0/24"])
        .ok();
    let mut b = crun.bundle(
        "crunann",
        "echo '== eth0'; ip -o -4 addr show dev eth0; \
         echo '== mac'; cat /sys/class/net/eth0/address; \
         echo '== route'; ip route | grep '^default'; \
         echo '== hosts'; cat /etc/hosts; \
         echo '== resolv'; cat /etc/resolv.conf; echo '== end'",
    );
    b.annotate("nethook.network", "web")
        .annotate("nethook.ip", "10.90.3.77")
        .annotate("nethook.mac", "02:42:ac:11:00:99")
        .annotate("nethook.aliases", "db,cache");
    let r = crun.run(&b).ok();
    let out = r.stdout.as_str();
    let section = |name: &str| -> String {
        out.split(&format!("== {name}\n"))
            .nth(1)
            .and_then(|s| s.split("== ").next())
            .unwrap_or_else(|| panic!("no section {name} in: {out}"))
            .to_string()
    };
    assert!(out.contains("== end"), "the script did not finish: {out}");
    assert_eq!(word_after(&section("eth0"), "inet"), Some("10.90.3.77/24"));
    assert_eq!(section("mac").trim(), "02:42:ac:11:00:99");
    assert!(
        section("route").starts_with("default via 10.90.3.1 dev eth0"),
        "{}",
        section("route")
    );
    let ip: Ipv4Addr = "10.90.3.77".parse().unwrap();
    assert!(
        hosts_names(&section("hosts"), ip, &[&b.hostname(), "db", "cache"]),
        "/etc/hosts:\n{}",
        section("hosts")
    );
    let resolv = section("resolv");
    let ns: Vec<Ipv4Addr> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .map(|n| n.trim().parse().expect("nameserver address"))
        .collect();
    assert!(!ns.is_empty(), "no nameserver in resolv.conf:\n{resolv}");
    assert!(
        ns.iter().all(|a| !a.is_loopback()),
        "resolv.conf points at loopback: {resolv}"
    );
    // `crun run` deleted the container at its end, running poststop: nothing is left.
    sb.assert_no_endpoints();
    assert!(
        wait_until(Duration::from_secs(5), || !sb.masq4_has(ip)),
        "masq4 still holds {ip}"
    );
    assert_eq!(hook_stderr(&b), "", "hooks complained");
}

#[test]
fn failing_create_runtime_fails_crun_and_leaves_nothing() {
    if !can_run_crun("crun_failing_setup") {
        return;
    }
    let sb = Sandbox::new("crunfail");
    let crun = Crun::new(&sb);
    let mut first = crun.bundle("holder", "exec nc -ll -p 8080 -e echo still-here");
    first.annotate("nethook.ip", "10.89.0.50");
    let a = crun.start(&first);
    sb.wait_listening_ctr(&a, 8080);
    let ip: Ipv4Addr = "10.89.0.50".parse().unwrap();
    assert_eq!(sb.ip_of(&a.id), ip);
    let before = snapshot(&sb);

    // The same static address again: createRuntime fails, crun refuses to run the container and
    // runs no poststop for it.
    let mut second = crun.bundle("second", "echo this-must-not-run");
    second.annotate("nethook.ip", "10.89.0.50");
    let r = crun.run(&second);
    assert_ne!(r.code, 0, "crun run succeeded: {}", r.stdout);
    assert!(!r.stdout.contains("this-must-not-run"));
    assert!(
        r.stderr.contains("error executing hook"),
        "crun does not report the hook failure:\n{}",
        r.stderr
    );
    // nethook's reason, where crun puts hook output.
    let msg = format!(
        "nethook: container {}: static address 10.89.0.50 on network nethook: is taken by {}",
        second.id, a.id
    );
    let err = hook_stderr(&second);
    assert!(
        err.contains(&msg),
        "the hook's stderr does not say {msg:?}:\n{err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert_eq!(hook_stdout(&second), "");
    // crun removed it; nethook left nothing of it; the holder keeps everything.
    assert_eq!(crun.list(), vec![a.id.clone()]);
    assert_eq!(snapshot(&sb), before);
    assert_eq!(
        sb.lease_holder("nethook", ip).as_deref(),
        Some(a.id.as_str())
    );
    assert!(!second.rootfs().join("etc").exists());
    assert_eq!(
        sb.tcp_get(ip, 8080).as_deref().map(str::trim),
        Some("still-here")
    );

    let a_if = sb.ps_row(&a.id)["host_interface"]
        .as_str()
        .unwrap()
        .to_string();
    crun.stop(&a.id).ok();
    sb.assert_gone(&a.id, ip, &a_if);
    sb.assert_no_endpoints();
}
