//! The harness of the root tests (DESIGN.md section 8).
//!
//! Every test makes a [`Sandbox`]: a throwaway network namespace standing in for the host, with
//! its own config and run dirs in a temp dir. nethook, runc, socat and every probe run inside it
//! through `nsenter --net=...` (never `ip netns exec`, which remounts /sys and breaks runc).
//! Container and peer namespaces are made by the sandbox too. Dropping the sandbox (also when
//! the test panics) deletes runc containers, kills every process the test spawned, deletes the
//! namespaces and the temp dir. Nothing here touches the root namespace, /etc or /run/nethook.

#![allow(dead_code)] // each test binary uses a different part of the harness

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_nethook");

/// How long any single command may run before the test gives up on it.
const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a host-side veth may outlive its endpoint: the kernel removes it with the
/// container's namespace, or poststop's background reaper deletes it after a 2 s grace.
pub const LINK_GRACE: Duration = Duration::from_secs(5);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test process and call: `nht-<short>-<pid>-<n>`.
pub fn unique(short: &str) -> String {
    format!(
        "nht-{short}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// True when the test can run: root, and every tool installed. Otherwise says why on stderr.
pub fn can_run(test: &str, tools: &[&str]) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test}: needs root");
        return false;
    }
    for t in ["ip", "nsenter", "unshare"].iter().chain(tools) {
        if !on_path(t) {
            eprintln!("skipping {test}: {t} is not installed");
            return false;
        }
    }
    true
}

/// Tools the runc end-to-end tests need.
pub const RUNC_TOOLS: &[&str] = &["runc", "busybox", "socat", "nft", "ss"];

/// Poll `f` every 20 ms until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The result of a command.
#[derive(Debug, Clone)]
pub struct Run {
    pub what: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Assert exit 0; returns self for chaining.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "{} failed (exit {}):\nstdout: {}\nstderr: {}",
            self.what, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Assert what a user sees when nethook refuses: exit 1, nothing on stdout, exactly one
    /// line `nethook: ...` on stderr that contains every one of `needles`.
    #[track_caller]
    pub fn refused(&self, needles: &[&str]) {
        assert_eq!(
            self.code, 1,
            "{}: expected exit 1, got {}\nstdout: {}\nstderr: {}",
            self.what, self.code, self.stdout, self.stderr
        );
        assert_eq!(self.stdout, "", "{}: nothing expected on stdout", self.what);
        let err = self.stderr.trim_end();
        assert_eq!(
            err.lines().count(),
            1,
            "{}: expected one line on stderr, got:\n{}",
            self.what,
            self.stderr
        );
        assert!(
            err.starts_with("nethook: "),
            "{}: stderr does not start with 'nethook: ': {err}",
            self.what
        );
        for n in needles {
            assert!(
                err.contains(n),
                "{}: stderr does not name {n:?}: {err}",
                self.what
            );
        }
        assert!(
            !err.contains("panicked") && !err.contains("Caused by"),
            "{}: {err}",
            self.what
        );
    }
}

/// Run a command with optional stdin, bounded by [`CMD_TIMEOUT`] (the process is killed and the
/// test fails when it hangs).
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Run {
    run_timeout(cmd, stdin, CMD_TIMEOUT)
}

pub fn run_timeout(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Run {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("stdin piped");
        let input = input.to_vec();
        // A writer thread: the child may exit (or refuse) before reading everything.
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    Run {
        what,
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// The address part of "10.89.0.2/16" (or of a bare address).
pub fn addr_of(s: &str) -> Ipv4Addr {
    s.split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{s:?} is not an IPv4 address"))
}

/// True when `ip` lies in `cidr` ("10.89.0.0/16").
pub fn in_subnet(ip: Ipv4Addr, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let net: Ipv4Addr = net.parse().unwrap();
    let len: u32 = len.parse().unwrap();
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// The key of an nft JSON set element: a bare value, `{"elem": {"val": ..}}`, or a map's
/// `[key, value]` pair.
fn nft_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(a) => a.first().and_then(nft_key),
        Value::Object(o) => {
            if let Some(e) = o.get("elem") {
                return nft_key(e);
            }
            if let Some(v) = o.get("val") {
                return nft_key(v);
            }
            if let Some(p) = o.get("prefix") {
                return Some(format!(
                    "{}/{}",
                    p.get("addr")?.as_str()?,
                    p.get("len")?.as_u64()?
                ));
            }
            None
        }
        _ => None,
    }
}

/// A peer namespace wired to the sandbox by a veth; the sandbox routes toward it by default.
pub struct Peer {
    pub name: String,
    /// The sandbox's address on the veth.
    pub sandbox_ip: Ipv4Addr,
    /// The peer's address.
    pub ip: Ipv4Addr,
}

impl Peer {
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

/// A runc bundle: a busybox rootfs and a config.json with nethook as createRuntime and poststop
/// hooks running in the sandbox's dirs.
pub struct Bundle {
    pub id: String,
    pub dir: PathBuf,
    pub config: Value,
}

impl Bundle {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub fn annotate(&mut self, k: &str, v: &str) -> &mut Self {
        if !self.config["annotations"].is_object() {
            self.config["annotations"] = json!({});
        }
        self.config["annotations"][k] = json!(v);
        self
    }
    pub fn hostname(&self) -> String {
        self.config["hostname"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    /// Extra arguments for the createRuntime hook (`--network web`, `--ip ...`).
    pub fn hook_args(&mut self, args: &[&str]) -> &mut Self {
        let a = self.config["hooks"]["createRuntime"][0]["args"]
            .as_array_mut()
            .expect("hook args");
        a.extend(args.iter().map(|s| json!(s)));
        self
    }
    pub fn write(&self) {
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .expect("writing config.json");
    }
    /// The OCI state runc gives poststop for this container.
    pub fn poststop_state(&self) -> String {
        json!({
            "ociVersion": "1.0.2-dev",
            "id": self.id,
            "status": "stopped",
            "bundle": self.dir,
            "annotations": self.config["annotations"],
        })
        .to_string()
    }
}

/// A container started with `runc create` + `runc start`.
pub struct Ctr {
    pub id: String,
    pub pid: u32,
}

impl Ctr {
    pub fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }
}

/// The throwaway "host".
pub struct Sandbox {
    pub name: String,
    pub dir: PathBuf,
    pub config_dir: PathBuf,
    pub run_dir: PathBuf,
    netns: Mutex<Vec<String>>,
    children: Mutex<Vec<Child>>,
    containers: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ip_netns_add(name: &str) {
    run(Command::new("ip").args(["netns", "add", name]), None).ok();
    run(
        Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]),
        None,
    )
    .ok();
}

impl Sandbox {
    /// A fresh sandbox namespace (lo up) and temp dir. The caller checked [`can_run`].
    pub fn new(short: &str) -> Sandbox {
        let name = unique(short);
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let sb = Sandbox {
            config_dir: dir.join("c"),
            run_dir: dir.join("r"),
            name: name.clone(),
            dir,
            netns: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
            containers: Mutex::new(Vec::new()),
        };
        ip_netns_add(&name);
        sb
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `nsenter --net=NETNS PROG` (NETNS a path).
    pub fn cmd_in(netns: &str, prog: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={netns}")).arg("--").arg(prog);
        c
    }

    /// A command inside the sandbox.
    pub fn cmd(&self, prog: &str) -> Command {
        Self::cmd_in(&self.path(), prog)
    }

    /// Run a command inside the sandbox.
    pub fn sh(&self, args: &[&str]) -> Run {
        run(self.cmd(args[0]).args(&args[1..]), None)
    }

    fn nethook_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.cmd(BIN);
        c.arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(args);
        c
    }

    /// `nethook --config-dir .. --run-dir .. ARGS` inside the sandbox.
    pub fn nethook(&self, args: &[&str]) -> Run {
        run(&mut self.nethook_cmd(args), None)
    }

    pub fn nethook_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        run(&mut self.nethook_cmd(args), Some(stdin))
    }

    // ---- namespaces and processes -------------------------------------------------------

    /// A new namespace owned by this sandbox (deleted at drop), lo up. Returns its name.
    pub fn add_netns(&self, short: &str) -> String {
        let name = unique(short);
        lock(&self.netns).push(name.clone());
        ip_netns_add(&name);
        name
    }

    /// A peer namespace wired to the sandbox (192.0.2.1 sandbox side, 192.0.2.2 peer side),
    /// with the sandbox's default route pointing at it. The peer has no route back to the
    /// container networks: only masqueraded traffic can get answers.
    pub fn add_peer(&self) -> Peer {
        let name = self.add_netns("peer");
        let sbn = self.name.clone();
        for args in [
            vec![
                "-n", &sbn, "link", "add", "nhtpeer0", "type", "veth", "peer", "name", "eth0",
                "netns", &name,
            ],
            vec!["-n", &sbn, "addr", "add", "192.0.2.1/24", "dev", "nhtpeer0"],
            vec!["-n", &sbn, "link", "set", "nhtpeer0", "up"],
            vec!["-n", &name, "addr", "add", "192.0.2.2/24", "dev", "eth0"],
            vec!["-n", &name, "link", "set", "eth0", "up"],
            vec!["-n", &sbn, "route", "add", "default", "via", "192.0.2.2"],
        ] {
            run(Command::new("ip").args(&args), None).ok();
        }
        Peer {
            name,
            sandbox_ip: Ipv4Addr::new(192, 0, 2, 1),
            ip: Ipv4Addr::new(192, 0, 2, 2),
        }
    }

    /// A "LAN" for macvlan networks: a veth whose sandbox end `lan0` is the parent and whose
    /// other end is `eth0` of a new peer namespace at 192.168.77.2/24 (a machine on the
    /// segment). Returns the peer's netns path.
    pub fn add_lan(&self) -> String {
        let peer = self.add_netns("lan");
        let sbn = self.name.clone();
        for args in [
            vec![
                "-n", &sbn, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns",
                &peer,
            ],
            vec!["-n", &sbn, "link", "set", "lan0", "up"],
            vec!["-n", &peer, "addr", "add", "192.168.77.2/24", "dev", "eth0"],
            vec!["-n", &peer, "link", "set", "eth0", "up"],
        ] {
            run(Command::new("ip").args(&args), None).ok();
        }
        format!("/run/netns/{peer}")
    }

    /// `network create NAME --driver macvlan --parent lan0 --subnet 192.168.77.0/24 --gateway
    /// 192.168.77.2 EXTRA...` on the LAN of [`Sandbox::add_lan`].
    pub fn create_macvlan(&self, name: &str, extra: &[&str]) -> Run {
        let mut a = vec![
            "network",
            "create",
            name,
            "--driver",
            "macvlan",
            "--parent",
            "lan0",
            "--subnet",
            "192.168.77.0/24",
            "--gateway",
            "192.168.77.2",
        ];
        a.extend_from_slice(extra);
        self.nethook(&a)
    }

    /// Spawn a process inside `netns` (a path), killed at drop. Returns its pid.
    pub fn spawn_in(&self, netns: &str, args: &[&str]) -> u32 {
        let mut c = Self::cmd_in(netns, args[0]);
        c.args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().expect("spawn");
        let pid = child.id();
        lock(&self.children).push(child);
        pid
    }

    /// `unshare -n sleep 60`: a process in a netns of its own (a stand-in container init).
    /// Returns once the process is in its new namespace.
    pub fn spawn_unshared_sleep(&self) -> u32 {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "60"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare");
        let pid = child.id();
        lock(&self.children).push(child);
        let mine = std::fs::read_link("/proc/self/ns/net").unwrap();
        let ready = wait_until(Duration::from_secs(5), || {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            comm.trim() == "sleep" && ns.is_some_and(|n| n != mine)
        });
        assert!(ready, "unshare -n sleep 60 did not get its own netns");
        pid
    }

    /// Kill and reap a process spawned by this sandbox.
    pub fn kill(&self, pid: u32) {
        let mut cs = lock(&self.children);
        if let Some(i) = cs.iter().position(|c| c.id() == pid) {
            let mut c = cs.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait until something listens on TCP `port` in `netns` (a path).
    pub fn wait_listening(&self, netns: &str, port: u16) {
        let ok = wait_until(Duration::from_secs(10), || {
            let r = run(
                Self::cmd_in(netns, "ss").args(["-Hltn", &format!("sport = :{port}")]),
                None,
            );
            r.code == 0 && !r.stdout.trim().is_empty()
        });
        assert!(ok, "nothing listens on port {port} in {netns}");
    }

    /// A TCP server in `netns` answering every connection with `reply`, via socat. Returns
    /// once it listens.
    pub fn serve_in(&self, netns: &str, port: u16, reply: &str) {
        self.spawn_in(
            netns,
            &[
                "socat",
                &format!("TCP-LISTEN:{port},reuseaddr,fork"),
                &format!("SYSTEM:echo {reply}"),
            ],
        );
        self.wait_listening(netns, port);
    }

    /// Connect from `netns` (a path) to ip:port with socat and return what the server sent
    /// (None when the connection failed).
    pub fn tcp_get_from(netns: &str, ip: Ipv4Addr, port: u16) -> Option<String> {
        Self::tcp_get_timeout(netns, ip, port, 3)
    }

    fn tcp_get_timeout(netns: &str, ip: Ipv4Addr, port: u16, secs: u32) -> Option<String> {
        let r = run(
            Self::cmd_in(netns, "socat").args([
                "-T".to_string(),
                secs.to_string(),
                "-u".to_string(),
                format!("TCP:{ip}:{port},connect-timeout={secs}"),
                "STDOUT".to_string(),
            ]),
            None,
        );
        (r.code == 0 && !r.stdout.is_empty()).then_some(r.stdout)
    }

    /// Connect from the sandbox ("the host").
    pub fn tcp_get(&self, ip: Ipv4Addr, port: u16) -> Option<String> {
        Self::tcp_get_from(&self.path(), ip, port)
    }

    /// True when nothing answers at ip:port from the sandbox within a second.
    pub fn tcp_dead(&self, ip: Ipv4Addr, port: u16) -> bool {
        Self::tcp_get_timeout(&self.path(), ip, port, 1).is_none()
    }

    // ---- what the user sees ---------------------------------------------------------------

    /// `ip -d -j link` in a namespace (a path).
    pub fn links_in(netns: &str) -> Vec<Value> {
        let r = run(Self::cmd_in(netns, "ip").args(["-d", "-j", "link"]), None).ok();
        serde_json::from_str(&r.stdout).expect("ip -j link output")
    }

    pub fn links(&self) -> Vec<Value> {
        Self::links_in(&self.path())
    }

    /// Names of the sandbox's links.
    pub fn link_names(&self) -> BTreeSet<String> {
        self.links()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect()
    }

    /// Names of the veth links in the sandbox, except the peer wiring made by the test.
    pub fn veths(&self) -> Vec<String> {
        self.links()
            .iter()
            .filter(|l| l["linkinfo"]["info_kind"] == "veth" && l["ifname"] != "nhtpeer0")
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect()
    }

    /// Names of the links in a namespace (a path).
    pub fn link_names_in(netns: &str) -> BTreeSet<String> {
        Self::links_in(netns)
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect()
    }

    /// `ip -j addr` in a namespace: (ifname, "addr/len") for every IPv4 address except lo's.
    pub fn addrs4_in(netns: &str) -> Vec<(String, String)> {
        let r = run(Self::cmd_in(netns, "ip").args(["-j", "-4", "addr"]), None).ok();
        let v: Vec<Value> = serde_json::from_str(&r.stdout).expect("ip -j addr output");
        let mut out = Vec::new();
        for l in v {
            let name = l["ifname"].as_str().unwrap_or_default().to_string();
            if name == "lo" {
                continue;
            }
            for a in l["addr_info"].as_array().into_iter().flatten() {
                if a["family"] == "inet" {
                    out.push((
                        name.clone(),
                        format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]),
                    ));
                }
            }
        }
        out
    }

    /// The `inet nethook` table as `nft -j` prints it; None when it does not exist.
    pub fn nft_table(&self) -> Option<Value> {
        let r = self.sh(&["nft", "-j", "list", "table", "inet", "nethook"]);
        if r.code != 0 {
            return None;
        }
        serde_json::from_str(&r.stdout).ok()
    }

    /// The keys of set or map `name` in the nethook table (empty when table or set is missing).
    pub fn nft_elems(&self, name: &str) -> Vec<String> {
        let Some(t) = self.nft_table() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for o in t["nftables"].as_array().into_iter().flatten() {
            for kind in ["set", "map"] {
                let s = &o[kind];
                if s["name"] == name {
                    for e in s["elem"].as_array().into_iter().flatten() {
                        if let Some(k) = nft_key(e) {
                            out.push(k);
                        }
                    }
                }
            }
        }
        out
    }

    /// True when set masq4 holds `ip`.
    pub fn masq4_has(&self, ip: Ipv4Addr) -> bool {
        self.nft_elems("masq4").iter().any(|k| k == &ip.to_string())
    }

    /// Files in the run dir's endpoints dir.
    pub fn endpoint_files(&self) -> Vec<String> {
        list_dir(&self.run_dir.join("endpoints"))
    }

    /// Lease files of every network: "NET/FILE" for each file under leases/NET/ except `last`.
    pub fn lease_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for net in list_dir(&self.run_dir.join("leases")) {
            for f in list_dir(&self.run_dir.join("leases").join(&net)) {
                if f != "last" {
                    out.push(format!("{net}/{f}"));
                }
            }
        }
        out
    }

    /// Who holds lease `ip` on `net` (the lease file's content).
    pub fn lease_holder(&self, net: &str, ip: Ipv4Addr) -> Option<String> {
        std::fs::read_to_string(self.run_dir.join("leases").join(net).join(ip.to_string()))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// `nethook ps --format json`.
    pub fn ps(&self) -> Vec<Value> {
        let r = self.nethook(&["--format", "json", "ps"]).ok();
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("ps --format json: {e}: {}", r.stdout))
    }

    /// The `ps` row of endpoint `id` (its first attachment).
    pub fn ps_row(&self, id: &str) -> Value {
        self.ps()
            .into_iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in nethook ps"))
    }

    /// The IPv4 address `ps` gives endpoint `id`.
    pub fn ip_of(&self, id: &str) -> Ipv4Addr {
        addr_of(self.ps_row(id)["ipv4"][0].as_str().expect("ipv4 in ps"))
    }

    /// Everything an endpoint leaves is gone: no host-side link, no record, no lease of it, and
    /// no masq4 element for its address (expired elements are reaped by the kernel: polled).
    #[track_caller]
    pub fn assert_gone(&self, id: &str, ip: Ipv4Addr, host_if: &str) {
        let link_gone = wait_until(LINK_GRACE, || !self.link_names().contains(host_if));
        assert!(
            link_gone,
            "host-side link {host_if} of {id} is still in the sandbox"
        );
        let rec = format!("{id}.json");
        assert!(
            !self.endpoint_files().contains(&rec),
            "endpoint record of {id} left: {:?}",
            self.endpoint_files()
        );
        let leases: Vec<String> = self
            .lease_files()
            .into_iter()
            .filter(|l| {
                l.ends_with(&format!("/{ip}"))
                    || std::fs::read_to_string(self.run_dir.join("leases").join(l))
                        .is_ok_and(|h| h.trim() == id)
            })
            .collect();
        assert!(leases.is_empty(), "leases of {id} left: {leases:?}");
        let nft_gone = wait_until(Duration::from_secs(5), || !self.masq4_has(ip));
        assert!(nft_gone, "masq4 still holds {ip} of {id}");
    }

    /// Nothing of nethook's per-container state at all: no record, no lease, no veth (a veth
    /// whose namespace is still alive is reaped by poststop's background child within ~2 s:
    /// polled).
    #[track_caller]
    pub fn assert_no_endpoints(&self) {
        assert_eq!(self.endpoint_files(), Vec::<String>::new(), "records left");
        assert_eq!(self.lease_files(), Vec::<String>::new(), "leases left");
        wait_until(LINK_GRACE, || self.veths().is_empty());
        assert_eq!(self.veths(), Vec::<String>::new(), "veths left");
    }

    // ---- runc ------------------------------------------------------------------------------

    /// A bundle running `script` with /bin/sh, nethook hooked in, hostname = its id.
    pub fn bundle(&self, short: &str, script: &str) -> Bundle {
        let id = unique(short);
        let dir = self.dir.join(format!("bundle-{id}"));
        let bin = dir.join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copying /bin/busybox");
        let list = run(Command::new("/bin/busybox").arg("--list"), None).ok();
        for applet in list
            .stdout
            .lines()
            .filter(|a| !a.is_empty() && *a != "busybox")
        {
            // Relative links: absolute ones would point at the host's busybox.
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        run(
            Command::new("runc").args(["spec", "--bundle"]).arg(&dir),
            None,
        )
        .ok();
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let hook = |stage: &str| {
            json!([{
                "path": BIN,
                "args": ["nethook", "--config-dir", self.config_dir, "--run-dir", self.run_dir,
                         "hook", stage],
                "timeout": 20,
            }])
        };
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(["/bin/sh", "-c", script]);
        config["hostname"] = json!(id);
        config["root"]["readonly"] = json!(false);
        config["hooks"] = json!({
            "createRuntime": hook("createRuntime"),
            "poststop": hook("poststop"),
        });
        config["annotations"] = json!({});
        Bundle { id, dir, config }
    }

    /// `runc --root DIR/runc-root ARGS` inside the sandbox.
    pub fn runc(&self, args: &[&str]) -> Command {
        let mut c = self.cmd("runc");
        c.arg("--root").arg(self.dir.join("runc-root")).args(args);
        c
    }

    /// `runc run` in the foreground: the container's output and runc's exit code.
    pub fn runc_run(&self, b: &Bundle) -> Run {
        b.write();
        lock(&self.containers).push(b.id.clone());
        let bundle = b.dir.to_string_lossy().into_owned();
        run_timeout(
            &mut self.runc(&["run", "--bundle", &bundle, &b.id]),
            None,
            Duration::from_secs(60),
        )
    }

    /// `runc create` + `runc start`, stdio to a file in the bundle; returns the container.
    pub fn runc_start(&self, b: &Bundle) -> Ctr {
        let c = self.runc_create(b);
        run(&mut self.runc(&["start", &b.id]), None).ok();
        c
    }

    /// `runc create` alone (its createRuntime hook has run when this returns), stdio to a file
    /// in the bundle; returns the created container (`runc start ID` runs it).
    pub fn runc_create(&self, b: &Bundle) -> Ctr {
        b.write();
        lock(&self.containers).push(b.id.clone());
        let bundle = b.dir.to_string_lossy().into_owned();
        let log = b.dir.join("ctr.log");
        let f = std::fs::File::create(&log).unwrap();
        let mut c = self.runc(&["create", "--bundle", &bundle, &b.id]);
        c.stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        let st = c.status().expect("runc create");
        assert!(
            st.success(),
            "runc create {} failed: {}",
            b.id,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let state = run(&mut self.runc(&["state", &b.id]), None).ok();
        let v: Value = serde_json::from_str(&state.stdout).expect("runc state");
        Ctr {
            id: b.id.clone(),
            pid: v["pid"].as_u64().expect("pid in runc state") as u32,
        }
    }

    /// `runc exec ID sh -c SCRIPT`.
    pub fn runc_exec(&self, c: &Ctr, script: &str) -> Run {
        run(
            &mut self.runc(&["exec", &c.id, "/bin/sh", "-c", script]),
            None,
        )
    }

    fn runc_status(&self, id: &str) -> Option<String> {
        let r = run(&mut self.runc(&["state", id]), None);
        if r.code != 0 {
            return None;
        }
        let v: Value = serde_json::from_str(&r.stdout).ok()?;
        v["status"].as_str().map(String::from)
    }

    /// `runc kill ID KILL`, wait for it to stop, `runc delete ID` (poststop runs here).
    pub fn runc_stop(&self, id: &str) -> Run {
        let _ = run(&mut self.runc(&["kill", id, "KILL"]), None);
        let stopped = wait_until(Duration::from_secs(10), || {
            self.runc_status(id).as_deref() != Some("running")
        });
        assert!(stopped, "container {id} did not stop");
        let r = run(&mut self.runc(&["delete", id]), None);
        lock(&self.containers).retain(|c| c != id);
        r
    }

    /// Wait until something listens on `port` inside container `c`.
    pub fn wait_listening_ctr(&self, c: &Ctr, port: u16) {
        self.wait_listening(&c.netns(), port);
    }
}

/// Names in a directory, sorted (empty when it does not exist).
pub fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Containers first: their poststop hooks run nethook in the sandbox.
        for id in lock(&self.containers).drain(..).collect::<Vec<_>>() {
            let _ = run(&mut self.runc(&["kill", &id, "KILL"]), None);
            let _ = run(&mut self.runc(&["delete", "-f", &id]), None);
        }
        for mut c in lock(&self.children).drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut all: Vec<String> = lock(&self.netns).drain(..).rev().collect();
        all.push(self.name.clone());
        for ns in all {
            // Anything still running in our own namespaces was started by this test (a socat,
            // a daemon nethook started): end it by pid, then drop the namespace.
            let pids = run(Command::new("ip").args(["netns", "pids", &ns]), None);
            for pid in pids.stdout.split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let _ = run(Command::new("ip").args(["netns", "del", &ns]), None);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An OCI state JSON as runc gives createRuntime.
pub fn create_state(id: &str, pid: Option<u32>, bundle: &Path) -> String {
    let mut v = json!({
        "ociVersion": "1.0.2-dev",
        "id": id,
        "status": "creating",
        "bundle": bundle,
        "annotations": {},
    });
    if let Some(p) = pid {
        v["pid"] = json!(p);
    }
    v.to_string()
}

/// A bundle for driving the hook by hand: config.json with its own netns, a rootfs dir, the
/// given annotations. Returns the bundle dir.
pub fn hand_bundle(sb: &Sandbox, short: &str, annotations: &[(&str, &str)]) -> PathBuf {
    let dir = sb.dir.join(unique(short));
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    let ann: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let cfg = json!({
        "ociVersion": "1.0.2",
        "hostname": "ctr",
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]},
        "annotations": ann,
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    dir
}

// ---- publishing and isolation (tests/publish.rs, tests/isolation.rs) ------------------------

/// The parts of an nft JSON set or map key: a concatenation's parts ("tcp", "8080"), a bare
/// value as one part; `{"elem": {"val": ..}}` (an element with a timeout) unwrapped.
pub fn nft_key_parts(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Array(a) => a.first().map(nft_key_parts).unwrap_or_default(),
        Value::Object(o) => {
            if let Some(e) = o.get("elem") {
                return nft_key_parts(e);
            }
            if let Some(v) = o.get("val") {
                return nft_key_parts(v);
            }
            if let Some(c) = o.get("concat").and_then(Value::as_array) {
                return c.iter().flat_map(nft_key_parts).collect();
            }
            nft_key(v).into_iter().collect()
        }
        _ => Vec::new(),
    }
}

impl Sandbox {
    /// The keys of map or set `name` of table inet nethook as `nft -j list map|set` prints them,
    /// each key's parts joined by " . " ("tcp . 8080"). Empty when the table or map is missing.
    pub fn nft_keys(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for kind in ["map", "set"] {
            let r = self.sh(&["nft", "-j", "list", kind, "inet", "nethook", name]);
            if r.code != 0 {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&r.stdout) else {
                continue;
            };
            for o in v["nftables"].as_array().into_iter().flatten() {
                for e in o[kind]["elem"].as_array().into_iter().flatten() {
                    out.push(nft_key_parts(e).join(" . "));
                }
            }
            break;
        }
        out.sort();
        out
    }

    /// True when map pub4 (every host address) or pub4_ip (one host address) has an element
    /// for host port `port` of `proto` ("tcp", "udp").
    pub fn forward_in_nft(&self, proto: &str, port: u16) -> bool {
        let p = port.to_string();
        self.nft_keys("pub4")
            .iter()
            .chain(self.nft_keys("pub4_ip").iter())
            .any(|k| {
                let parts: Vec<&str> = k.split(" . ").collect();
                parts.first() == Some(&proto) && parts.last() == Some(&p.as_str())
            })
    }

    /// A TCP server in `netns` answering every connection with `TAG CLIENT_ADDRESS` (the source
    /// address it saw), via socat. Returns once it listens.
    pub fn serve_source_in(&self, netns: &str, port: u16, tag: &str) {
        self.serve_in(netns, port, &format!("{tag} $SOCAT_PEERADDR"));
    }

    /// A UDP server in `netns` answering every datagram (a line, as [`Sandbox::udp_get_from`]
    /// sends) with `TAG CLIENT_ADDRESS`, via socat. Returns once it listens.
    pub fn serve_udp_in(&self, netns: &str, port: u16, tag: &str) {
        self.spawn_in(
            netns,
            &[
                "socat",
                &format!("UDP4-RECVFROM:{port},reuseaddr,fork"),
                // The script reads the datagram first: a script that exits before socat has
                // written it makes socat fail with EPIPE and drop the answer.
                &format!("SYSTEM:read -r req; echo {tag} $SOCAT_PEERADDR"),
            ],
        );
        self.wait_listening_udp(netns, port);
    }

    /// Wait until something listens on UDP `port` in `netns` (a path).
    pub fn wait_listening_udp(&self, netns: &str, port: u16) {
        let ok = wait_until(Duration::from_secs(10), || {
            let r = run(
                Self::cmd_in(netns, "ss").args(["-Hlun", &format!("sport = :{port}")]),
                None,
            );
            r.code == 0 && !r.stdout.trim().is_empty()
        });
        assert!(ok, "nothing listens on UDP port {port} in {netns}");
    }

    /// True when nothing answers TCP at ip:port from `netns` within a second.
    pub fn tcp_dead_from(netns: &str, ip: Ipv4Addr, port: u16) -> bool {
        Self::tcp_get_timeout(netns, ip, port, 1).is_none()
    }

    /// One datagram from `netns` (a path) to ip:port with socat; what came back within `wait`
    /// (None when nothing did, or the port was unreachable).
    fn udp_once(netns: &str, ip: Ipv4Addr, port: u16, wait: &str) -> Option<String> {
        let r = run(
            Self::cmd_in(netns, "socat").args([
                "-t".to_string(),
                wait.to_string(),
                "-T".to_string(),
                "2".to_string(),
                "STDIO".to_string(),
                format!("UDP4:{ip}:{port}"),
            ]),
            Some(b"ping\n"),
        );
        (r.code == 0 && !r.stdout.is_empty()).then_some(r.stdout)
    }

    /// A UDP request from `netns` to ip:port and the answer, retried for up to 3 s (a datagram
    /// may be lost while neighbours resolve). None when nothing answered.
    pub fn udp_get_from(netns: &str, ip: Ipv4Addr, port: u16) -> Option<String> {
        let end = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(s) = Self::udp_once(netns, ip, port, "0.3") {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True when a UDP request from `netns` to ip:port gets no answer within a second.
    pub fn udp_dead_from(netns: &str, ip: Ipv4Addr, port: u16) -> bool {
        Self::udp_once(netns, ip, port, "1").is_none()
    }

    /// The host-port claims in the run dir: "PROTO/PORT/HOST_IP" for each claim file.
    pub fn port_claims(&self) -> Vec<String> {
        let base = self.run_dir.join("ports");
        let mut out = Vec::new();
        for proto in list_dir(&base) {
            for port in list_dir(&base.join(&proto)) {
                for ip in list_dir(&base.join(&proto).join(&port)) {
                    if !ip.starts_with('.') {
                        out.push(format!("{proto}/{port}/{ip}"));
                    }
                }
            }
        }
        out
    }

    /// `nethook port ls --format json` (of one endpoint when `id` is given).
    pub fn port_ls(&self, id: Option<&str>) -> Vec<Value> {
        let mut args = vec!["--format", "json", "port", "ls"];
        args.extend(id);
        let r = self.nethook(&args).ok();
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("port ls --format json: {e}: {}", r.stdout))
    }
}

// ---- DNS (tests/dns.rs) -----------------------------------------------------------------------

/// A DNS answer as a test sees it: the response code ("NOERROR", "NXDOMAIN", ...) and the
/// answer records' data as text (addresses, PTR names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    pub rcode: String,
    pub data: Vec<String>,
    pub truncated: bool,
}

/// `dig` from `netns` (a path): `dig @SERVER ARGS +tries=1 +time=2`, parsed (status line and
/// the answer section). None when no server answered.
pub fn dig_in(netns: &str, server: Ipv4Addr, args: &[&str]) -> Option<DnsAnswer> {
    let at = format!("@{server}");
    let mut c = Sandbox::cmd_in(netns, "dig");
    c.arg(&at)
        .args(["+tries=1", "+time=2", "+noall", "+comments", "+answer"])
        .args(args);
    let r = run(&mut c, None);
    let status = r
        .stdout
        .lines()
        .find_map(|l| l.split("status: ").nth(1))?
        .split(',')
        .next()?
        .to_string();
    let truncated = r.stdout.lines().any(|l| {
        l.starts_with(";; flags:")
            && l.split(';')
                .nth(2)
                .is_some_and(|f| f.split_whitespace().any(|w| w == "tc"))
    });
    let data = r
        .stdout
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
        .collect();
    Some(DnsAnswer {
        rcode: status,
        data,
        truncated,
    })
}

/// The A addresses `dig` gets for `name` (empty on NXDOMAIN or no answer).
pub fn dig_a(netns: &str, server: Ipv4Addr, name: &str) -> Vec<String> {
    dig_in(netns, server, &[name, "A"])
        .map(|a| a.data)
        .unwrap_or_default()
}

/// Run `f` on a thread inside `netns` (a path): sockets it opens stay in that namespace.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(netns).unwrap_or_else(|e| panic!("{netns}: {e}"));
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// One DNS query over UDP from inside `netns`, in process (no tool start-up: for timings).
/// Returns the response code and the A addresses; None when nothing came back within `wait`.
pub fn query_in(
    netns: &str,
    server: std::net::SocketAddrV4,
    name: &str,
    wait: Duration,
) -> Option<(hickory_proto::op::ResponseCode, Vec<Ipv4Addr>)> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let bytes = m.to_vec().unwrap();
    let id = m.id;
    in_netns(netns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        s.set_read_timeout(Some(wait)).ok()?;
        s.send_to(&bytes, server).ok()?;
        let mut buf = [0u8; 4096];
        loop {
            let n = s.recv(&mut buf).ok()?;
            let Ok(r) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if r.id != id {
                continue;
            }
            let ips = r
                .answers
                .iter()
                .filter_map(|a| match &a.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect();
            return Some((r.response_code, ips));
        }
    })
}

/// A tiny upstream name server for forwarding tests, on port 53 of every address of the
/// namespace it runs in (a peer's: never an outside address). It answers `A` for the names in
/// `names`; for `big.example.` a truncated UDP reply and 40 addresses over TCP; NXDOMAIN for
/// the rest. Counts what it was asked. Stops (and frees its sockets) when dropped.
pub struct FakeUpstream {
    pub asked: std::sync::Arc<Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeUpstream {
    pub const BIG: &'static str = "big.example.";

    pub fn start(netns: &str, names: &[(&str, Ipv4Addr)]) -> FakeUpstream {
        let names: Vec<(String, Ipv4Addr)> = names
            .iter()
            .map(|(n, ip)| (n.trim_end_matches('.').to_ascii_lowercase(), *ip))
            .collect();
        let asked = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ns = std::fs::File::open(netns).unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (a2, s2) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let udp = std::net::UdpSocket::bind("0.0.0.0:53").expect("fake upstream udp");
            udp.set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let tcp = std::net::TcpListener::bind("0.0.0.0:53").expect("fake upstream tcp");
            tcp.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 4096];
            while !s2.load(Ordering::SeqCst) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    if let Some(reply) = Self::reply(&names, &a2, &buf[..n], true) {
                        let _ = udp.send_to(&reply, from);
                    }
                }
                while let Ok((mut c, _)) = tcp.accept() {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut len = [0u8; 2];
                    if c.read_exact(&mut len).is_err() {
                        continue;
                    }
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    if c.read_exact(&mut q).is_err() {
                        continue;
                    }
                    if let Some(reply) = Self::reply(&names, &a2, &q, false) {
                        let mut out = (reply.len() as u16).to_be_bytes().to_vec();
                        out.extend_from_slice(&reply);
                        let _ = c.write_all(&out);
                    }
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("fake upstream did not start");
        FakeUpstream {
            asked,
            stop,
            thread: Some(thread),
        }
    }

    fn reply(
        names: &[(String, Ipv4Addr)],
        asked: &Mutex<Vec<String>>,
        packet: &[u8],
        udp: bool,
    ) -> Option<Vec<u8>> {
        use hickory_proto::op::{Message, MessageType, ResponseCode};
        use hickory_proto::rr::{rdata::A, RData, Record, RecordType};
        let q = Message::from_vec(packet).ok()?;
        let question = q.queries.first()?.clone();
        let name = question.name().to_ascii().to_ascii_lowercase();
        let name = name.trim_end_matches('.').to_string();
        lock(asked).push(format!("{name} {}", if udp { "udp" } else { "tcp" }));
        let mut r = Message::new(q.id, MessageType::Response, q.op_code);
        r.metadata.recursion_desired = q.recursion_desired;
        r.metadata.recursion_available = true;
        r.add_query(question.clone());
        let a = |ip: Ipv4Addr| Record::from_rdata(question.name().clone(), 60, RData::A(A(ip)));
        if name == Self::BIG.trim_end_matches('.') {
            if udp {
                r.metadata.truncation = true;
            } else {
                for i in 1..=40u8 {
                    r.add_answer(a(Ipv4Addr::new(198, 51, 100, i)));
                }
            }
        } else if let Some((_, ip)) = names.iter().find(|(n, _)| *n == name) {
            if question.query_type() == RecordType::A {
                r.add_answer(a(*ip));
            }
        } else {
            r.metadata.response_code = ResponseCode::NXDomain;
        }
        r.to_vec().ok()
    }

    /// The names asked so far, as "NAME udp|tcp".
    pub fn asked(&self) -> Vec<String> {
        lock(&self.asked).clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Sandbox {
    /// The pid of the running DNS daemon (`nethook dns status`), if any.
    pub fn dns_pid(&self) -> Option<u32> {
        let r = self.nethook(&["--format", "json", "dns", "status"]).ok();
        let v: Value = serde_json::from_str(&r.stdout).expect("dns status json");
        v["pid"].as_u64().map(|p| p as u32)
    }

    /// Pids of every process inside the sandbox namespace (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        run(Command::new("ip").args(["netns", "pids", &self.name]), None)
            .stdout
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The daemon's log (for failure messages).
    pub fn dns_log(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("dns/log")).unwrap_or_default()
    }
}
