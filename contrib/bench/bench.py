#!/usr/bin/env python3
"""nethook benchmark harness: nethook vs netavark vs the CNI plugins vs raw `ip`, side by side.

Run through ./run (it installs the packages and builds nethook first). Everything happens in
network namespaces this script creates (a "sandbox" per tool standing in for the host, one per
container); the root namespace's links, routes and firewall are never touched and no traffic
leaves the sandboxes. Everything is removed at the end, also on an error or Ctrl-C.

Python stdlib only. See README.md for what is measured and how each peer is configured.
"""

import ctypes
import datetime
import fcntl
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
RESULTS = os.environ.get("BENCH_RESULTS", os.path.join(HERE, "results"))

TAG = os.environ.get("BENCH_TAG") or str(os.getpid())
PREFIX = f"nhb{TAG}-"  # every netns this run makes starts with this
STATE_ROOT = f"/dev/shm/nhb{TAG}"  # tmpfs, like /run: every tool's state lives under it
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}

SUBNET = "10.88.0.0/16"
GATEWAY = "10.88.0.1"
PREFIXLEN = 16
PROBE_PORT = (8080, 80)  # host port, container port of the "one published port" cases


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# configuration (env overrides; BENCH_QUICK=1 for the day-to-day run)


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def env_list(name, default):
    v = os.environ.get(name)
    if v in (None, ""):
        return default
    return [int(x) for x in v.replace(" ", "").split(",") if x]


QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")


class Cfg:
    quick = QUICK
    warmup = env_int("BENCH_WARMUP", 2 if QUICK else 5)
    rounds = env_int("BENCH_ROUNDS", 3 if QUICK else 5)
    repeats = env_int("BENCH_REPEATS", 5 if QUICK else 15)  # per tool per round
    scale_k = env_list("BENCH_SCALE_K", [1, 50, 100] if QUICK else [1, 100, 500, 1000])
    scale_batch = env_int("BENCH_SCALE_BATCH", 3 if QUICK else 6)
    ports = env_list("BENCH_PORTS", [0, 200] if QUICK else [0, 500, 2000])
    ports_per_filler = env_int("BENCH_PORTS_PER_CTR", 100)
    conc = env_int("BENCH_CONC", 50)
    conc_rounds = env_int("BENCH_CONC_ROUNDS", 1 if QUICK else 3)
    iperf_time = env_int("BENCH_IPERF_TIME", 1 if QUICK else 2)
    iperf_reps = env_int("BENCH_IPERF_REPS", 1 if QUICK else 2)
    dns = os.environ.get("BENCH_DNS", "1") not in ("", "0")
    dns_records = env_int("BENCH_DNS_RECORDS", 200 if QUICK else 1000)
    dns_time = env_int("BENCH_DNS_TIME", 3 if QUICK else 10)
    cases = set(
        os.environ.get("BENCH_CASES", "floor,base,scale,ports,conc,iperf,overlay,dns").split(",")
    )
    tools = os.environ.get("BENCH_TOOLS", "nethook,nethookcni,netavark,cni,raw").split(",")
    seed = env_int("BENCH_SEED", 1)

    @classmethod
    def as_dict(cls):
        return {
            k: (sorted(v) if isinstance(v, set) else v)
            for k, v in vars(cls).items()
            if not k.startswith("_") and not callable(v) and not isinstance(v, classmethod)
        }


# --------------------------------------------------------------------------------------------
# binaries


def need(path_or_name):
    p = path_or_name if os.path.isabs(path_or_name) else shutil.which(path_or_name, path=BASE_ENV["PATH"])
    if not p or not os.access(p, os.X_OK):
        sys.exit(f"bench: {path_or_name} not found; run contrib/bench/run (it installs it)")
    return p


NETHOOK = os.environ.get("BENCH_NETHOOK", os.path.join(REPO, "target", "release", "nethook"))
NETAVARK = os.environ.get("BENCH_NETAVARK", "/usr/lib/podman/netavark")
AARDVARK = os.environ.get("BENCH_AARDVARK", "/usr/lib/podman/aardvark-dns")
CNI_PATH = os.environ.get("BENCH_CNI_PATH", "/usr/lib/cni")
IP = None
IPERF3 = None
DNSPERF = None

# --------------------------------------------------------------------------------------------
# namespaces: setns(2) on the calling thread; children spawned from it start in that netns

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
CLONE_NEWNET = 0x40000000
_libc.if_nametoindex.argtypes = [ctypes.c_char_p]
_libc.if_nametoindex.restype = ctypes.c_uint


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


class netns:
    """`with netns(path):` runs the block (and everything it spawns) in that network namespace."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.old = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd)
        except BaseException:
            os.close(self.old)
            raise
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc):
        _setns(self.old)
        os.close(self.old)
        return False


def link_exists(name):
    """In the current thread's netns (an ioctl socket is made in it)."""
    return _libc.if_nametoindex(name.encode()) != 0


# --------------------------------------------------------------------------------------------
# spawning: posix_spawn with stdin/stdout/stderr in memfds, timed around spawn..reap


class Res:
    __slots__ = ("dt", "rc", "out", "err", "t0", "t1")

    def __init__(self, dt, rc, out, err, t0=None, t1=None):
        self.dt, self.rc, self.out, self.err = dt, rc, out, err
        self.t0, self.t1 = t0, t1

    @property
    def ok(self):
        return self.rc == 0

    def errline(self):
        t = (self.err or b"").decode(errors="replace").strip().splitlines()
        t = [x for x in t if "failed to connect to syslog" not in x]
        return (t[-1] if t else f"exit {self.rc}")[:300]


def spawn(argv, stdin=b"", env=None, lock=None, timeout=None):
    """Run argv to completion; dt covers (lock wait +) spawn to reap, nothing else."""
    fin = os.memfd_create("in")
    fout = os.memfd_create("out")
    ferr = os.memfd_create("err")
    try:
        if stdin:
            os.write(fin, stdin)
            os.lseek(fin, 0, os.SEEK_SET)
        fa = [
            (os.POSIX_SPAWN_DUP2, fin, 0),
            (os.POSIX_SPAWN_DUP2, fout, 1),
            (os.POSIX_SPAWN_DUP2, ferr, 2),
        ]
        e = env if env is not None else BASE_ENV
        t0 = time.perf_counter()
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pid = os.posix_spawn(argv[0], argv, e, file_actions=fa)
            if timeout is None:
                _, st = os.waitpid(pid, 0)
            else:
                end = time.monotonic() + timeout
                while True:
                    p, st = os.waitpid(pid, os.WNOHANG)
                    if p:
                        break
                    if time.monotonic() > end:
                        os.kill(pid, signal.SIGKILL)
                        _, st = os.waitpid(pid, 0)
                        break
                    time.sleep(0.005)
        finally:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
        t1 = time.perf_counter()
        rc = os.waitstatus_to_exitcode(st)
        out = _slurp(fout)
        err = _slurp(ferr)
        return Res(t1 - t0, rc, out, err, t0, t1)
    finally:
        for f in (fin, fout, ferr):
            os.close(f)


def _slurp(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def short_err(line):
    """nethook's error without the 'nethook: container ID:' prefix."""
    return re.sub(r"^nethook: container \S+: ", "", line)


def must(r, what):
    if not r.ok:
        raise RuntimeError(f"{what}: {r.errline()}")
    return r


# --------------------------------------------------------------------------------------------
# cleanup registry: netns names, background pids, state dirs. Removed at exit whatever happens.


class Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.pids = set()

    def add_pid(self, pid):
        with self.lock:
            self.pids.add(pid)


REG = Registry()


def ns_path(name):
    return f"/run/netns/{name}"


def ns_add(names):
    if not names:
        return
    data = "".join(f"netns add {n}\n" for n in names).encode()
    must(spawn([IP, "-batch", "-"], data), "ip netns add")


def ns_del(names):
    if not names:
        return
    data = "".join(f"netns del {n}\n" for n in names).encode()
    spawn([IP, "-force", "-batch", "-"], data)


def our_netns():
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(PREFIX))
    except FileNotFoundError:
        return []


def pids_in(netns_names):
    """Processes whose netns is one of ours (one /proc scan)."""
    inodes = set()
    for n in netns_names:
        try:
            inodes.add(os.stat(ns_path(n)).st_ino)
        except OSError:
            pass
    found = []
    if not inodes:
        return found
    me = os.getpid()
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == me:
            continue
        try:
            if os.stat(f"/proc/{p}/ns/net").st_ino in inodes:
                found.append(int(p))
        except OSError:
            pass
    return found


def kill_pids(pids):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = []
        for p in pids:
            try:
                os.kill(p, sig)
                live.append(p)
            except ProcessLookupError:
                pass
        for p in live:
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass
        if not live:
            return
        time.sleep(0.2)
        pids = [p for p in live if os.path.exists(f"/proc/{p}") and not _zombie(p)]


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def cleanup_all(verbose=True):
    names = our_netns()
    pids = sorted(set(pids_in(names)) | {p for p in REG.pids if os.path.exists(f"/proc/{p}") and not _zombie(p)})
    if pids:
        kill_pids(pids)
    if names:
        ns_del(names)
    if os.path.isdir(STATE_ROOT):
        shutil.rmtree(STATE_ROOT, ignore_errors=True)
    if verbose:
        log(f"cleanup: removed {len(names)} netns, {len(pids)} processes, {STATE_ROOT}")


def cleanup_stale():
    """Sweep what runs whose `run` process is gone left behind (tag = that process's pid)."""
    global PREFIX, STATE_ROOT
    tags = set()
    try:
        for n in os.listdir("/run/netns"):
            m = re.match(r"^nhb(\d+)-", n)
            if m:
                tags.add(m.group(1))
    except FileNotFoundError:
        pass
    for d in os.listdir("/dev/shm"):
        m = re.match(r"^nhb(\d+)$", d)
        if m:
            tags.add(m.group(1))
    for tag in sorted(tags):
        if os.path.exists(f"/proc/{tag}"):
            log(f"cleanup: run {tag} is still going; left alone")
            continue
        PREFIX, STATE_ROOT = f"nhb{tag}-", f"/dev/shm/nhb{tag}"
        cleanup_all()
    if not tags:
        log("cleanup: nothing of an earlier run found")


# --------------------------------------------------------------------------------------------
# statistics


def pct(xs, p):
    """Percentile by linear interpolation between closest ranks."""
    if not xs:
        return None
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def stats(xs):
    """Milliseconds."""
    if not xs:
        return None
    ms = [x * 1000 for x in xs]
    return {
        "n": len(ms),
        "median": round(statistics.median(ms), 3),
        "p90": round(pct(ms, 90), 3),
        "p99": round(pct(ms, 99), 3),
        "min": round(min(ms), 3),
        "max": round(max(ms), 3),
        "mean": round(statistics.fmean(ms), 3),
    }


def cpu_busy(interval=0.3):
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return idle, sum(v)

    i0, t0 = snap()
    time.sleep(interval)
    i1, t1 = snap()
    return 1.0 - (i1 - i0) / max(1, (t1 - t0))


def wait_quiet(limit=15.0, busy=0.15):
    """Let the kernel finish async work (netns cleanup) before the next case."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cpu_busy() < busy:
            return
    log("note: machine still busy after waiting for quiet")


# --------------------------------------------------------------------------------------------
# containers and tools


class Ctr:
    def __init__(self, tool, idx):
        self.tool = tool
        self.idx = idx
        self.name = f"{PREFIX}{tool.key}-c{idx}"
        self.path = ns_path(self.name)
        self.id = f"nhb-{tool.key}-c{idx}"
        self.hexid = f"{idx:064x}"
        self.ip = idx_ip(idx)  # used by tools whose caller picks addresses (netavark, raw)
        self.ports = []
        self.priv = {}


def idx_ip(idx):
    n = idx + 2  # .0 network, .1 gateway
    return f"10.88.{n // 256}.{n % 256}"


class Tool:
    key = "tool"
    label = "tool"
    ports_ok = None  # None: not yet known; True / False after a try
    ports_why = ""

    def __init__(self):
        self.sb_name = f"{PREFIX}{self.key}-sb"
        self.sb = ns_path(self.sb_name)
        self.dir = os.path.join(STATE_ROOT, self.key)
        self.next_idx = 0
        self.live = {}

    # --- lifecycle of the tool's world
    def open(self):
        os.makedirs(self.dir, exist_ok=True)
        ns_add([self.sb_name])
        with netns(self.sb):
            must(spawn([IP, "link", "set", "lo", "up"]), "lo up in sandbox")
            self.prepare()

    def prepare(self):
        pass

    def close(self):
        names = [c.name for c in self.live.values()] + [self.sb_name]
        pids = pids_in(names)
        if pids:
            kill_pids(pids)
        ns_del(names)
        self.live.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- containers
    def new_ctrs(self, n, ports_each=None):
        cs = []
        for _ in range(n):
            c = Ctr(self, self.next_idx)
            self.next_idx += 1
            if ports_each:
                c.ports = ports_each(c)
            cs.append(c)
        ns_add([c.name for c in cs])
        for c in cs:
            self.live[c.idx] = c
        return cs

    def drop_ctr(self, c):
        ns_del([c.name])
        self.live.pop(c.idx, None)

    def attach(self, c):
        """Timed setup (caller holds the sandbox netns). Returns Res-like (dt, ok, err)."""
        raise NotImplementedError

    def detach(self, c):
        """Timed teardown in the tool's own lifecycle order; removes the container netns."""
        raise NotImplementedError

    def ip_of(self, c):
        return c.ip

    def version(self):
        return ""


class Outcome:
    """A timed setup or teardown: dt seconds inside [t0, t1] (perf_counter)."""

    def __init__(self, dt, ok, err="", t0=None, t1=None):
        self.dt, self.ok, self.err = dt, ok, err
        self.t0, self.t1 = t0, t1

    @classmethod
    def of(cls, r, err=""):
        return cls(r.dt, r.ok, "" if r.ok else (err or r.errline()), r.t0, r.t1)


# ---- nethook


class Nethook(Tool):
    key = "nethook"
    label = "nethook"
    network = "bench"
    dns = False  # like netavark's dns_enabled: false; only the DNS case turns it on

    def __init__(self, wait_link_gone=True, key=None, label=None):
        if key:
            self.key = key
        if label:
            self.label = label
        self.wait_link_gone = wait_link_gone
        super().__init__()
        self.cfg = os.path.join(self.dir, "config")
        self.run = os.path.join(self.dir, "run")
        self.bundles = os.path.join(self.dir, "bundles")
        self.argv0 = [NETHOOK, "--config-dir", self.cfg, "--run-dir", self.run]
        self.link_wait = []  # how long the kernel took to drop the host veth after netns release

    def prepare(self):
        must(
            spawn(self.argv0 + ["network", "create", self.network, "--subnet", SUBNET]
                  + ([] if self.dns else ["--no-dns"])),
            "nethook network create",
        )

    def _bundle(self, c):
        b = os.path.join(self.bundles, c.id)
        os.makedirs(os.path.join(b, "rootfs", "etc"), exist_ok=True)
        ann = {"nethook.network": self.network}
        if c.ports:
            ann["nethook.publish"] = ",".join(f"{h}:{p}" for h, p in c.ports)
        cfg = {
            "ociVersion": "1.0.2",
            "hostname": f"c{c.idx}",
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": c.path}]},
            "annotations": ann,
        }
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(cfg, f)
        return b, ann

    def attach(self, c):
        b, ann = self._bundle(c)
        c.priv["bundle"] = b
        st = {
            "ociVersion": "1.0.2",
            "id": c.id,
            "status": "creating",
            "pid": os.getpid(),
            "bundle": b,
            "annotations": ann,
        }
        r = spawn(self.argv0 + ["hook", "createRuntime"], json.dumps(st).encode())
        return Outcome.of(r, short_err(r.errline()))

    def _record(self, c):
        try:
            with open(os.path.join(self.run, "endpoints", f"{c.id}.json")) as f:
                return json.load(f)
        except OSError:
            return None

    def ip_of(self, c):
        rec = self._record(c)
        return rec["attachments"][0]["ipv4"] if rec else None

    def detach(self, c):
        # runc order: the container is gone (its netns with it), then poststop runs.
        rec = self._record(c)
        host_if = rec["attachments"][0]["host_interface"] if rec else None
        self.drop_ctr(c)
        if self.wait_link_gone and host_if:
            t0 = time.perf_counter()
            while link_exists(host_if) and time.perf_counter() - t0 < 2.0:
                time.sleep(0.0005)
            self.link_wait.append(time.perf_counter() - t0)
        st = {
            "ociVersion": "1.0.2",
            "id": c.id,
            "status": "stopped",
            "bundle": c.priv.get("bundle", self.bundles),
            "annotations": {},
        }
        r = spawn(self.argv0 + ["hook", "poststop"], json.dumps(st).encode())
        return Outcome.of(r, short_err(r.errline()))

    def version(self):
        r = spawn([NETHOOK, "version"])
        return r.out.decode().strip()


# ---- netavark


class Netavark(Tool):
    key = "netavark"
    label = "netavark"

    def __init__(self):
        super().__init__()
        self.conf = os.path.join(self.dir, "config")
        self.lockpath = os.path.join(self.dir, "netavark.lock")
        self.env = dict(BASE_ENV, NETAVARK_FW="iptables")
        self.net_info = {
            "bench": {
                "name": "bench",
                "id": "6e6874686f6f6b2062656e6368206e6574776f726b2066726f6d2074686520",
                "driver": "bridge",
                "network_interface": "podman1",
                "created": "2026-01-01T00:00:00Z",
                "subnets": [{"subnet": SUBNET, "gateway": GATEWAY}],
                "ipv6_enabled": False,
                "internal": False,
                "dns_enabled": False,
                "ipam_options": {"driver": "host-local"},
            }
        }

    def prepare(self):
        os.makedirs(self.conf, exist_ok=True)
        open(self.lockpath, "a").close()

    def _opts(self, c):
        return json.dumps(
            {
                "container_id": c.hexid,
                "container_name": f"c{c.idx}",
                "port_mappings": [
                    {"host_ip": "", "container_port": p, "host_port": h, "range": 1, "protocol": "tcp"}
                    for h, p in c.ports
                ],
                "networks": {"bench": {"static_ips": [c.ip], "interface_name": "eth0"}},
                "network_info": self.net_info,
            }
        ).encode()

    def _run(self, cmd, c):
        # podman holds its netavark lock around every call; so do we (the wait is counted).
        fd = os.open(self.lockpath, os.O_RDWR | os.O_CLOEXEC)
        try:
            argv = [NETAVARK, "--config", self.conf, "--rootless", "false", cmd, c.path]
            return spawn(argv, self._opts(c), env=self.env, lock=fd)
        finally:
            os.close(fd)

    def attach(self, c):
        return Outcome.of(self._run("setup", c))

    def detach(self, c):
        # podman order: teardown while the netns still exists, then the netns goes.
        r = self._run("teardown", c)
        self.drop_ctr(c)
        return Outcome.of(r)

    def version(self):
        return spawn([NETAVARK, "--version"]).out.decode().strip()


# ---- CNI reference plugins, driven the way libcni drives a conflist


class CNI(Tool):
    key = "cni"
    label = "CNI bridge+portmap"

    def __init__(self):
        super().__init__()
        self.data = os.path.join(self.dir, "host-local")
        self.conflist = {
            "cniVersion": "1.0.0",
            "name": "bench",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": self.data,
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            ],
        }
        self.results = {}

    def prepare(self):
        os.makedirs(self.data, exist_ok=True)
        with open(os.path.join(self.dir, "bench.conflist"), "w") as f:
            json.dump(self.conflist, f, indent=1)

    def _prog(self, p):
        return os.path.join(CNI_PATH, p["type"])

    def _plugin_conf(self, p, c, prev):
        conf = dict(p)
        conf["cniVersion"] = self.conflist["cniVersion"]
        conf["name"] = self.conflist["name"]
        caps = p.get("capabilities", {})
        if caps.get("portMappings") and c.ports:
            conf["runtimeConfig"] = {
                "portMappings": [
                    {"hostPort": h, "containerPort": cp, "protocol": "tcp"} for h, cp in c.ports
                ]
            }
        if prev is not None:
            conf["prevResult"] = prev
        return json.dumps(conf).encode()

    def _env(self, cmd, c):
        return dict(
            BASE_ENV,
            CNI_COMMAND=cmd,
            CNI_CONTAINERID=c.id,
            CNI_NETNS=c.path,
            CNI_IFNAME="eth0",
            CNI_PATH=CNI_PATH,
        )

    def attach(self, c):
        total = 0.0
        prev = None
        env = self._env("ADD", c)
        first = time.perf_counter()
        for p in self.conflist["plugins"]:
            t0 = time.perf_counter()
            r = spawn([self._prog(p)], self._plugin_conf(p, c, prev), env=env)
            if not r.ok:
                total += time.perf_counter() - t0
                msg = r.out.decode(errors="replace").strip() or r.errline()
                return Outcome(total, False, f"{p['type']}: {msg[:300]}", first, time.perf_counter())
            prev = json.loads(r.out)
            total += time.perf_counter() - t0  # includes the result parse, as in libcni
        self.results[c.idx] = prev
        return Outcome(total, True, "", first, time.perf_counter())

    def detach(self, c):
        # containerd order: DEL while the netns still exists, plugins in reverse, each given
        # the cached result as prevResult (libcni), then the netns goes.
        total = 0.0
        prev = self.results.pop(c.idx, None)
        env = self._env("DEL", c)
        err = ""
        first = time.perf_counter()
        for p in reversed(self.conflist["plugins"]):
            t0 = time.perf_counter()
            r = spawn([self._prog(p)], self._plugin_conf(p, c, prev), env=env)
            total += time.perf_counter() - t0
            if not r.ok and not err:
                err = f"{p['type']}: {(r.out.decode(errors='replace').strip() or r.errline())[:300]}"
        last = time.perf_counter()
        self.drop_ctr(c)
        return Outcome(total, not err, err, first, last)

    def ip_of(self, c):
        r = self.results.get(c.idx)
        return r["ips"][0]["address"].split("/")[0] if r else None

    def version(self):
        r = spawn(["/usr/bin/dpkg-query", "-W", "-f", "${Version}", "containernetworking-plugins"])
        return "containernetworking-plugins " + r.out.decode().strip()


class NethookCNI(CNI):
    """nethook's own CNI mode (issue 10), driven exactly like the reference bridge+portmap
    conflist above: same runtime-side loop, same DEL order (netns still there), one plugin."""

    key = "nethookcni"
    label = "nethook as CNI plugin"
    network = "bench"

    def __init__(self):
        super().__init__()
        self.cfg = os.path.join(self.dir, "config")
        self.run = os.path.join(self.dir, "run")
        self.conflist = {
            "cniVersion": "1.1.0",
            "name": "bench",
            "plugins": [
                {
                    "type": "nethook",
                    "network": self.network,
                    "configDir": self.cfg,
                    "runDir": self.run,
                    "capabilities": {"portMappings": True},
                }
            ],
        }

    def prepare(self):
        must(
            spawn([NETHOOK, "--config-dir", self.cfg, "--run-dir", self.run, "network", "create",
                   self.network, "--subnet", SUBNET, "--no-dns"]),
            "nethook network create (CNI)",
        )

    def _prog(self, p):
        return NETHOOK

    def version(self):
        return spawn([NETHOOK, "version"]).out.decode().strip() + " (CNI mode)"


# ---- raw kernel floor: ip -batch, the peer created directly in the netns, no firewall


class Raw(Tool):
    key = "raw"
    label = "raw ip -batch"
    ports_ok = False
    ports_why = "no firewall by design (kernel floor)"

    def prepare(self):
        must(
            spawn(
                [IP, "-batch", "-"],
                f"link add br0 type bridge\naddr add {GATEWAY}/{PREFIXLEN} dev br0\nlink set br0 up\n".encode(),
            ),
            "raw bridge",
        )

    def attach(self, c):
        host = f"rb{c.idx}"
        c.priv["host"] = host
        r1 = spawn(
            [IP, "-batch", "-"],
            f"link add {host} master br0 up type veth peer name eth0 netns {c.name}\n".encode(),
        )
        if not r1.ok:
            return Outcome.of(r1)
        with netns(c.path):
            r2 = spawn(
                [IP, "-batch", "-"],
                (
                    "link set lo up\n"
                    f"addr add {c.ip}/{PREFIXLEN} dev eth0\n"
                    "link set eth0 up\n"
                    f"route add default via {GATEWAY}\n"
                ).encode(),
            )
        return Outcome(r1.dt + r2.dt, r2.ok, "" if r2.ok else r2.errline(), r1.t0, r2.t1)

    def detach(self, c):
        r = spawn([IP, "link", "del", c.priv.get("host", f"rb{c.idx}")])
        self.drop_ctr(c)
        return Outcome.of(r)

    def version(self):
        return spawn([IP, "-V"]).out.decode().strip()


def make_tools(names):
    out = []
    for n in names:
        n = n.strip()
        if n == "nethook":
            out.append(Nethook())
        elif n == "netavark":
            out.append(Netavark())
        elif n == "cni":
            out.append(CNI())
        elif n == "nethookcni":
            out.append(NethookCNI())
        elif n == "raw":
            out.append(Raw())
        elif n:
            sys.exit(f"bench: unknown tool {n!r} in BENCH_TOOLS")
    return out


# --------------------------------------------------------------------------------------------
# helpers for cases


def cycle(tool, ports=None):
    """One container: netns made, setup timed, teardown timed, netns gone."""
    (c,) = tool.new_ctrs(1)
    if ports:
        c.ports = list(ports)
    with netns(tool.sb):
        a = tool.attach(c)
        if not a.ok:
            # undo whatever was half made, untimed
            try:
                tool.detach(c)
            except Exception:
                tool.drop_ctr(c)
            return a, None
        d = tool.detach(c)
    return a, d


def fill(tool, n, ports_each=None, batch=100):
    """Attach n more containers that stay; returns seconds spent in setup."""
    spent = 0.0
    left = n
    while left > 0:
        m = min(batch, left)
        cs = tool.new_ctrs(m, ports_each)
        with netns(tool.sb):
            for c in cs:
                a = tool.attach(c)
                if not a.ok:
                    raise RuntimeError(f"{tool.label}: filler setup failed: {a.err}")
                spent += a.dt
        left -= m
    return spent


def probe_ports_support(tool):
    """Publishing support, found by trying: one container with one published port."""
    if tool.ports_ok is not None:
        return tool.ports_ok
    a, d = cycle(tool, [PROBE_PORT])
    tool.ports_ok = a.ok and (d is None or d.ok)
    if not tool.ports_ok:
        tool.ports_why = a.err if not a.ok else (d.err if d else "")
        log(f"{tool.label}: published ports not accepted: {tool.ports_why}")
    return tool.ports_ok


# --------------------------------------------------------------------------------------------
# cases


def case_floor(res):
    """The harness's own cost: spawning /bin/true the same way every tool is spawned."""
    sb = f"{PREFIX}floor-sb"
    ns_add([sb])
    try:
        with netns(ns_path(sb)):
            xs = [spawn(["/bin/true"]).dt for _ in range(200)]
    finally:
        ns_del([sb])
    res["floor"] = {"spawn_true": stats(xs)}
    hf = shutil.which("hyperfine", path=BASE_ENV["PATH"])
    if hf:
        # cross-check of the harness's timer: hyperfine's own measurement of the same exec
        j = os.path.join(STATE_ROOT, "hyperfine.json")
        r = spawn([hf, "-N", "--runs", "200", "--warmup", "10", "--export-json", j, "/bin/true"], timeout=60)
        if r.ok:
            with open(j) as f:
                hr = json.load(f)["results"][0]
            res["floor"]["hyperfine_true"] = {
                "median": round(hr["median"] * 1000, 3),
                "mean": round(hr["mean"] * 1000, 3),
            }
    log(f"floor: spawning /bin/true costs {res['floor']['spawn_true']['median']:.3f} ms median")


def case_base(res, tool_names):
    """Setup/teardown of one container on a network that is up (one anchor container attached),
    without and with one published port; warm-up first; tools interleaved sample by sample."""
    tools = make_tools(tool_names)
    if "nethook" in tool_names:
        # poststop called right after the netns is released, before the kernel has dropped the
        # veth pair (what a runtime calling poststop at once may see)
        tools.append(
            Nethook(
                wait_link_gone=False,
                key="nethookrace",
                label="nethook (poststop racing netns cleanup)",
            )
        )
    out = {}
    rng = random.Random(Cfg.seed)
    try:
        for t in tools:
            t.open()
            fill(t, 1)  # the anchor
        res.setdefault("checks", {})["firewall_tables_after_setup"] = firewall_tables(tools)
        for variant, ports in (("noports", None), ("port1", [PROBE_PORT])):
            active = []
            out[variant] = {}
            for t in tools:
                if ports and not probe_ports_support(t):
                    out[variant][t.key] = {"label": t.label, "status": "n/a", "reason": t.ports_why}
                    continue
                active.append(t)
            log(f"base/{variant}: warm-up ({Cfg.warmup} each)")
            for t in active:
                for _ in range(Cfg.warmup):
                    a, d = cycle(t, ports)
                    if not a.ok:
                        raise RuntimeError(f"{t.label} setup failed in warm-up: {a.err}")
            samples = {t.key: {"setup": [], "teardown": [], "rounds": []} for t in active}
            errors = {t.key: [] for t in active}
            for rnd in range(Cfg.rounds):
                per_round = {t.key: ([], []) for t in active}
                for _ in range(Cfg.repeats):
                    order = active[:]
                    rng.shuffle(order)
                    for t in order:
                        a, d = cycle(t, ports)
                        if not a.ok or (d and not d.ok):
                            errors[t.key].append(a.err or d.err)
                            continue
                        per_round[t.key][0].append(a.dt)
                        per_round[t.key][1].append(d.dt)
                for t in active:
                    s, td = per_round[t.key]
                    samples[t.key]["setup"] += s
                    samples[t.key]["teardown"] += td
                    samples[t.key]["rounds"].append(
                        {
                            "setup_median": round(statistics.median(s) * 1000, 3) if s else None,
                            "teardown_median": round(statistics.median(td) * 1000, 3) if td else None,
                        }
                    )
                log(
                    f"base/{variant} round {rnd + 1}/{Cfg.rounds}: "
                    + ", ".join(
                        f"{t.key} {samples[t.key]['rounds'][-1]['setup_median']}/"
                        f"{samples[t.key]['rounds'][-1]['teardown_median']} ms"
                        for t in active
                    )
                )
            for t in active:
                s = samples[t.key]
                entry = {
                    "label": t.label,
                    "status": "ok" if s["setup"] else "failed",
                    "setup": stats(s["setup"]),
                    "teardown": stats(s["teardown"]),
                    "rounds": s["rounds"],
                    "noise": noise_of(s["rounds"]),
                    "errors": errors[t.key][:5],
                    "error_count": len(errors[t.key]),
                }
                if isinstance(t, Nethook) and t.wait_link_gone and t.link_wait:
                    entry["kernel_veth_release_wait"] = stats(t.link_wait)
                    t.link_wait = []
                out[variant][t.key] = entry
    finally:
        for t in tools:
            t.close()
    res["base"] = out


def firewall_tables(tools):
    """Which nftables tables each tool made in its sandbox (shows who does firewall work)."""
    nft = shutil.which("nft", path=BASE_ENV["PATH"])
    out = {}
    for t in tools:
        if not nft:
            out[t.key] = "nft missing"
            continue
        with netns(t.sb):
            r = spawn([nft, "list", "tables"])
        out[t.key] = [l.replace("table ", "") for l in r.out.decode().split("\n") if l.strip()]
    return out


def noise_of(rounds):
    """Spread of the per-round medians, relative to their median (percent)."""
    out = {}
    for m in ("setup_median", "teardown_median"):
        xs = [r[m] for r in rounds if r[m] is not None]
        if len(xs) >= 2:
            med = statistics.median(xs)
            out[m.replace("_median", "")] = round(100.0 * (max(xs) - min(xs)) / med, 1) if med else None
    return out


def case_scale(res, tool_names):
    """Cost of the k-th container on one network (k-1 others stay attached)."""
    out = {}
    names = tool_names[:]
    random.Random(Cfg.seed + 1).shuffle(names)
    for name in names:
        (t,) = make_tools([name])
        wait_quiet()
        log(f"scale/{t.key}: k = {Cfg.scale_k}")
        entry = {"label": t.label, "status": "ok", "levels": {}, "fill_setup_seconds": 0.0}
        try:
            t.open()
            attached = 0
            for _ in range(Cfg.warmup):
                cycle(t)
            for k in sorted(Cfg.scale_k):
                need_n = max(0, k - 1 - attached)
                t0 = time.perf_counter()
                entry["fill_setup_seconds"] += fill(t, need_n)
                attached += need_n
                fill_wall = time.perf_counter() - t0
                su, td, errs = [], [], []
                for _ in range(Cfg.scale_batch):
                    a, d = cycle(t)
                    if not a.ok or (d and not d.ok):
                        errs.append(a.err or d.err)
                        continue
                    su.append(a.dt)
                    td.append(d.dt)
                entry["levels"][str(k)] = {"setup": stats(su), "teardown": stats(td), "errors": errs[:3]}
                log(
                    f"scale/{t.key} k={k}: setup {entry['levels'][str(k)]['setup']['median'] if su else 'fail'} ms, "
                    f"teardown {entry['levels'][str(k)]['teardown']['median'] if td else 'fail'} ms "
                    f"(filled {need_n} in {fill_wall:.1f}s)"
                )
            entry["fill_setup_seconds"] = round(entry["fill_setup_seconds"], 2)
        except Exception as e:
            entry["status"] = "failed"
            entry["reason"] = str(e)[:300]
            log(f"scale/{t.key}: failed: {e}")
        finally:
            t.close()
        out[t.key] = entry
    res["scale_containers"] = out


def case_ports(res, tool_names):
    """Cost of a container with one published port when P ports are already published
    (by P/ports_per_ctr other containers)."""
    out = {}
    names = tool_names[:]
    random.Random(Cfg.seed + 2).shuffle(names)
    per = Cfg.ports_per_filler
    for name in names:
        (t,) = make_tools([name])
        wait_quiet()
        entry = {"label": t.label, "status": "ok", "levels": {}}
        try:
            t.open()
            if not probe_ports_support(t):
                entry = {"label": t.label, "status": "n/a", "reason": t.ports_why}
                out[t.key] = entry
                continue
            log(f"ports/{t.key}: P = {Cfg.ports}")
            fill(t, 1)  # an anchor without ports keeps the network up at every P
            for _ in range(Cfg.warmup):
                cycle(t, [PROBE_PORT])
            present = 0
            next_port = 10000
            entry["publish_seconds"] = {}  # time the tool took to publish the P ports (fill)
            spent = 0.0
            for P in sorted(Cfg.ports):
                while present < P:
                    m = min(per, P - present)

                    def ports_each(c, m=m):
                        nonlocal next_port
                        ps = [(next_port + i, 1000 + i) for i in range(m)]
                        next_port += m
                        return ps

                    t0 = time.perf_counter()
                    spent += fill(t, 1, ports_each)
                    present += m
                    log(f"ports/{t.key}: {present} published ({time.perf_counter() - t0:.1f}s for {m})")
                su, td, errs = [], [], []
                for _ in range(Cfg.scale_batch):
                    a, d = cycle(t, [PROBE_PORT])
                    if not a.ok or (d and not d.ok):
                        errs.append(a.err or d.err)
                        continue
                    su.append(a.dt)
                    td.append(d.dt)
                entry["levels"][str(P)] = {"setup": stats(su), "teardown": stats(td), "errors": errs[:3]}
                entry["publish_seconds"][str(P)] = round(spent, 2)
                log(
                    f"ports/{t.key} P={P}: setup {entry['levels'][str(P)]['setup']['median'] if su else 'fail'} ms, "
                    f"teardown {entry['levels'][str(P)]['teardown']['median'] if td else 'fail'} ms"
                )
        except Exception as e:
            entry["status"] = "failed"
            entry["reason"] = str(e)[:300]
            log(f"ports/{t.key}: failed: {e}")
        finally:
            t.close()
        out[t.key] = entry
    res["scale_ports"] = out


def case_conc(res, tool_names):
    """N containers started at once on one network; then all torn down at once."""
    out = {}
    for name in tool_names:
        (t,) = make_tools([name])
        wait_quiet()
        entry = {"label": t.label, "status": "ok", "runs": []}
        try:
            t.open()
            fill(t, 1)
            for _ in range(Cfg.warmup):
                cycle(t)
            for rnd in range(Cfg.conc_rounds):
                cs = t.new_ctrs(Cfg.conc)
                run = {}
                for phase in ("setup", "teardown"):
                    times = [None] * len(cs)
                    starts = [None] * len(cs)
                    ends = [None] * len(cs)
                    errs = []
                    barrier = threading.Barrier(len(cs))

                    def worker(i, c):
                        try:
                            with netns(t.sb):
                                barrier.wait()
                                o = t.attach(c) if phase == "setup" else t.detach(c)
                                starts[i], ends[i] = o.t0, o.t1
                                if o.ok:
                                    times[i] = o.dt
                                else:
                                    errs.append(o.err)
                        except Exception as e:  # noqa: BLE001
                            errs.append(str(e))

                    ths = [threading.Thread(target=worker, args=(i, c), daemon=True) for i, c in enumerate(cs)]
                    for th in ths:
                        th.start()
                    for th in ths:
                        th.join()
                    ok = [x for x in times if x is not None]
                    st = [s for s in starts if s is not None]
                    en = [e for e in ends if e is not None]
                    run[phase] = {
                        "total_ms": round((max(en) - min(st)) * 1000, 1) if st and en else None,
                        "per_hook": stats(ok),
                        "failed": len(errs),
                        "errors": errs[:3],
                    }
                    log(
                        f"conc/{t.key} {phase}: {Cfg.conc} at once in {run[phase]['total_ms']} ms, "
                        f"p99 {run[phase]['per_hook']['p99'] if ok else '-'} ms, {len(errs)} failed"
                    )
                    if phase == "setup":
                        # anything that failed to attach still needs its netns removed
                        pass
                for c in list(t.live.values()):
                    if c.idx in [x.idx for x in cs]:
                        t.drop_ctr(c)
                entry["runs"].append(run)
            for phase in ("setup", "teardown"):
                tot = [r[phase]["total_ms"] for r in entry["runs"] if r[phase]["total_ms"] is not None]
                p99 = [r[phase]["per_hook"]["p99"] for r in entry["runs"] if r[phase]["per_hook"]]
                med = [r[phase]["per_hook"]["median"] for r in entry["runs"] if r[phase]["per_hook"]]
                entry[phase] = {
                    "total_ms": round(statistics.median(tot), 1) if tot else None,
                    "p99_ms": round(statistics.median(p99), 3) if p99 else None,
                    "median_ms": round(statistics.median(med), 3) if med else None,
                    "failed": sum(r[phase]["failed"] for r in entry["runs"]),
                }
        except Exception as e:
            entry["status"] = "failed"
            entry["reason"] = str(e)[:300]
            log(f"conc/{t.key}: failed: {e}")
        finally:
            t.close()
        out[t.key] = entry
    res["concurrency"] = out


def iperf(server_ns, client_ns, target, port, listen_port=5201):
    """One short TCP run; returns Gbit/s or raises."""
    with netns(server_ns):
        srv = subprocess.Popen(
            [IPERF3, "-s", "-1", "-p", str(listen_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=BASE_ENV,
        )
    REG.add_pid(srv.pid)
    try:
        last = ""
        for _ in range(30):
            time.sleep(0.05)
            with netns(client_ns):
                r = spawn(
                    [IPERF3, "-c", target, "-p", str(port), "-t", str(Cfg.iperf_time), "-J",
                     "--connect-timeout", "2000"],
                    timeout=Cfg.iperf_time + 15,
                )
            try:
                j = json.loads(r.out)
            except ValueError:
                j = {}
            bps = j.get("end", {}).get("sum_received", {}).get("bits_per_second")
            if r.ok and bps:
                return round(bps / 1e9, 2)
            last = j.get("error") or r.errline()
            if "refused" not in last:
                break
        raise RuntimeError(last or "iperf3 failed")
    finally:
        srv.kill()
        srv.wait()


def case_iperf(res, tool_names):
    out = {}
    for name in tool_names:
        (t,) = make_tools([name])
        entry = {"label": t.label, "status": "ok"}
        try:
            t.open()
            pub = probe_ports_support(t)
            a, b = t.new_ctrs(2)
            if pub:
                a.ports = [(8080, 5201)]
            with netns(t.sb):
                for c in (a, b):
                    o = t.attach(c)
                    if not o.ok:
                        raise RuntimeError(f"setup: {o.err}")
            ipa = t.ip_of(a)
            tests = [
                ("ctr_to_ctr", a.path, b.path, ipa, 5201),
                ("host_to_ctr", a.path, t.sb, ipa, 5201),
                ("host_to_ctr_published", a.path, t.sb, GATEWAY, 8080),
                ("hairpin", a.path, a.path, GATEWAY, 8080),
            ]
            for key, sns, cns, tgt, port in tests:
                if key in ("host_to_ctr_published", "hairpin") and not pub:
                    entry[key] = {"status": "n/a", "reason": t.ports_why}
                    continue
                vals, err = [], ""
                for _ in range(Cfg.iperf_reps):
                    try:
                        vals.append(iperf(sns, cns, tgt, port))
                    except Exception as e:  # noqa: BLE001
                        err = str(e)[:200]
                        break
                if vals:
                    entry[key] = {"status": "ok", "gbps": statistics.median(vals), "runs": vals}
                else:
                    entry[key] = {"status": "failed", "reason": err}
                log(f"iperf/{t.key} {key}: {entry[key].get('gbps', entry[key].get('reason'))}")
        except Exception as e:
            entry["status"] = "failed"
            entry["reason"] = str(e)[:300]
            log(f"iperf/{t.key}: failed: {e}")
        finally:
            t.close()
        out[t.key] = entry
    res["throughput"] = out


# ---- overlay across hosts (issue 9)

OV_UNDERLAY = "192.168.77"  # .1, .2: the hosts' underlay addresses; .254: etcd, on the sandbox's bridge
OV_SUBNET = "10.201.0.0/16"
OV_NET = "ov"
OV_SHAPE = "1gbit"
OV_WHY_UNSHAPED = (
    "in one kernel the overlay's extra veths, bridges and encapsulation are CPU work on the same "
    "cores as the sender; on a wire the only cost is the 50-byte VXLAN header"
)


def _wait_tcp(ns, host, port, limit=15.0):
    """A TCP connect from inside netns `ns` (the socket is made in it) succeeds."""
    import socket

    end = time.monotonic() + limit
    with netns(ns):
        while time.monotonic() < end:
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.1)
    return False


def _ov_routes(ns):
    r = spawn([IP, "-n", ns, "-4", "route"])
    return [l.split()[0] for l in r.out.decode().splitlines() if "nh-vx" in l]


def _ov_has_route(ns, ip):
    import ipaddress

    a = ipaddress.ip_address(ip)
    for p in _ov_routes(ns):
        try:
            if a in ipaddress.ip_network(p, strict=False):
                return True
        except ValueError:
            pass
    return False


def case_overlay(res):
    """iperf3 between two hosts of an overlay network, against the underlay between the hosts,
    unshaped and with the underlay shaped like a physical NIC (tbf on both hosts' underlay veths)."""
    etcd = shutil.which("etcd", path=BASE_ENV["PATH"])
    tc = shutil.which("tc", path=BASE_ENV["PATH"])
    out = {"label": "nethook overlay (VXLAN)", "status": "ok"}
    res["overlay"] = out
    if "nethook" not in Cfg.tools:
        out.update(status="n/a", reason="nethook is not in BENCH_TOOLS")
        return
    if not etcd:
        out.update(status="n/a", reason="etcd not installed (Debian etcd-server; contrib/bench/run installs it)")
        log(f"overlay: n/a: {out['reason']}")
        return
    if not tc:
        out.update(status="n/a", reason="tc not installed (iproute2)")
        return
    res["versions"]["etcd"] = " ".join(spawn([etcd, "--version"]).out.decode().splitlines()[0].replace("Version:", "").split())
    d = os.path.join(STATE_ROOT, "overlay")
    os.makedirs(d, exist_ok=True)
    sb = f"{PREFIX}ov-sb"
    hosts = [f"{PREFIX}ov-h{i}" for i in (1, 2)]
    ctrs = [f"{PREFIX}ov-c{i}" for i in (1, 2)]
    names = [sb] + hosts + ctrs
    procs = []  # etcd and the agents
    etcd_url = f"http://{OV_UNDERLAY}.254:2379"

    def argv0(i):
        return [NETHOOK, "--config-dir", os.path.join(d, f"h{i + 1}", "config"),
                "--run-dir", os.path.join(d, f"h{i + 1}", "run")]

    def bg(ns, argv, logname):
        with open(os.path.join(d, logname), "ab") as lf, netns(ns_path(ns)):
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf, env=BASE_ENV)
        REG.add_pid(p.pid)
        procs.append(p)
        return p

    def tail(logname):
        try:
            with open(os.path.join(d, logname), errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-3:])[:300]
        except OSError:
            return ""

    try:
        ns_add(names)
        for n in names:
            must(spawn([IP, "-n", n, "link", "set", "lo", "up"]), "lo up")
        # The underlay: a bridge in the sandbox, each host on a veth (eth0 in the host netns).
        cmds = [
            [IP, "-n", sb, "link", "add", "ul0", "type", "bridge"],
            [IP, "-n", sb, "addr", "add", f"{OV_UNDERLAY}.254/24", "dev", "ul0"],
            [IP, "-n", sb, "link", "set", "ul0", "up"],
        ]
        for i, h in enumerate(hosts):
            cmds += [
                [IP, "-n", sb, "link", "add", f"ulh{i + 1}", "type", "veth", "peer", "name", "eth0", "netns", h],
                [IP, "-n", sb, "link", "set", f"ulh{i + 1}", "master", "ul0", "up"],
                [IP, "-n", h, "addr", "add", f"{OV_UNDERLAY}.{i + 1}/24", "dev", "eth0"],
                [IP, "-n", h, "link", "set", "eth0", "up"],
            ]
        for c in cmds:
            must(spawn(c), " ".join(c[1:]))
        bg(sb, [etcd, "--data-dir", os.path.join(d, "etcd-data"),
                "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                "--initial-cluster", "default=http://127.0.0.1:2380"], "etcd.log")
        if not _wait_tcp(ns_path(sb), f"{OV_UNDERLAY}.254", 2379):
            raise RuntimeError(f"etcd did not listen: {tail('etcd.log')}")
        for i, h in enumerate(hosts):
            with netns(ns_path(h)):
                must(spawn(argv0(i) + ["cluster", "join", "--etcd", etcd_url,
                                       "--vtep-ip", f"{OV_UNDERLAY}.{i + 1}", "--name", f"h{i + 1}"]),
                     f"nethook cluster join (h{i + 1})")
        with netns(ns_path(hosts[0])):
            must(spawn(argv0(0) + ["network", "create", OV_NET, "--driver", "overlay",
                                   "--subnet", OV_SUBNET, "--no-dns"]),
                 "nethook network create --driver overlay")
        for i, h in enumerate(hosts):
            bg(h, argv0(i) + ["agent", "--lease-ttl", "5"], f"agent-h{i + 1}.log")
        # One container netns per host. h2's agent has to have fetched the network first.
        ips = []
        for i, (h, c) in enumerate(zip(hosts, ctrs)):
            t0 = time.monotonic()
            while True:
                with netns(ns_path(h)):
                    r = spawn(argv0(i) + ["attach", ns_path(c), "--network", OV_NET, "--id", f"ovc{i + 1}"])
                if r.ok or time.monotonic() - t0 > 10:
                    break
                time.sleep(0.2)
            must(r, f"nethook attach on h{i + 1}")
            with open(os.path.join(d, f"h{i + 1}", "run", "endpoints", f"ovc{i + 1}.json")) as f:
                ips.append(json.load(f)["attachments"][0]["ipv4"].split("/")[0])
        t0 = time.monotonic()
        while not (_ov_has_route(hosts[0], ips[1]) and _ov_has_route(hosts[1], ips[0])):
            if time.monotonic() - t0 > 10:
                raise RuntimeError(
                    f"no route between the hosts' blocks after 10 s: h1 {_ov_routes(hosts[0])}, "
                    f"h2 {_ov_routes(hosts[1])}; agent h1: {tail('agent-h1.log')}"
                )
            time.sleep(0.05)
        out["route_ready_s"] = round(time.monotonic() - t0, 3)
        out["containers"] = {"h1": ips[0], "h2": ips[1]}
        mtu = spawn([IP, "-n", ctrs[0], "-o", "link", "show", "eth0"]).out.decode()
        m = re.search(r"mtu (\d+)", mtu)
        out["container_mtu"] = int(m.group(1)) if m else None
        log(f"overlay: containers {ips[0]} (h1), {ips[1]} (h2); routes in {out['route_ready_s']} s")

        for variant in ("unshaped", "shaped"):
            if variant == "shaped":
                for h in hosts:
                    must(spawn([tc, "-n", h, "qdisc", "replace", "dev", "eth0", "root", "tbf",
                                "rate", OV_SHAPE, "burst", "256kb", "latency", "20ms"]), "tc tbf")
            under, over, err = [], [], ""
            for _ in range(Cfg.iperf_reps):  # interleaved: machine noise hits both alike
                try:
                    under.append(iperf(ns_path(hosts[1]), ns_path(hosts[0]), f"{OV_UNDERLAY}.2", 5201))
                    over.append(iperf(ns_path(ctrs[1]), ns_path(ctrs[0]), ips[1], 5201))
                except Exception as e:  # noqa: BLE001
                    err = str(e)[:200]
                    break
            e = {"status": "ok"}
            if variant == "shaped":
                e["shaping"] = f"tbf rate {OV_SHAPE} burst 256kb latency 20ms on eth0 of both hosts"
            if under and over and len(under) == len(over):
                u, o = statistics.median(under), statistics.median(over)
                e.update(underlay_gbps=u, overlay_gbps=o, underlay_runs=under, overlay_runs=over,
                         ratio=round(o / u, 3) if u else None)
            else:
                e.update(status="failed", reason=err or "no result")
            out[variant] = e
            log(f"overlay/{variant}: " + (f"underlay {e['underlay_gbps']} Gbit/s, overlay {e['overlay_gbps']} "
                                           f"Gbit/s: {e['ratio'] * 100:.0f}%" if e["status"] == "ok" else e["reason"]))
        sh = out.get("shaped", {})
        if sh.get("status") == "ok":
            out["target"] = {"what": "overlay / underlay on the shaped (wire-limited) pair", "min": 0.8,
                             "met": sh["ratio"] >= 0.8}
    except Exception as e:
        out["status"] = "failed"
        out["reason"] = str(e)[:300]
        log(f"overlay: failed: {e}")
    finally:
        for p in reversed(procs):  # agents first, then etcd
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        pids = pids_in(names)
        if pids:
            kill_pids(pids)
        ns_del(names)
        shutil.rmtree(d, ignore_errors=True)


DNSPERF_ARGS = ["-c", "4", "-q", "64"]


def dns_queries(path, n):
    """20000 A queries for random existing names ctr0..ctr{n-1} (same seed: same file for both)."""
    rng = random.Random(Cfg.seed)
    with open(path, "w") as f:
        for _ in range(20000):
            f.write(f"ctr{rng.randrange(n)} A\n")


def dnsperf(cli_path, qfile):
    """dnsperf from the client container's netns against GATEWAY:53; the figures we report."""
    with netns(cli_path):
        r = spawn(
            [DNSPERF, "-s", GATEWAY, "-d", qfile, "-l", str(Cfg.dns_time)] + DNSPERF_ARGS + ["-v"],
            timeout=Cfg.dns_time + 30,
        )
    text = r.out.decode(errors="replace")
    lat = [float(m.group(2)) for m in re.finditer(r"^> (\S+) \S+ A ([0-9.]+)$", text, re.M)]
    rcodes = {}
    for m in re.finditer(r"^> (\S+) ", text, re.M):
        rcodes[m.group(1)] = rcodes.get(m.group(1), 0) + 1
    qps = re.search(r"Queries per second:\s+([0-9.]+)", text)
    lost = re.search(r"Queries lost:\s+(\d+)", text)
    out = {
        "qps": round(float(qps.group(1)), 1) if qps else None,
        "latency_ms": stats(lat) if lat else None,
        "rcodes": rcodes,
        "lost": int(lost.group(1)) if lost else None,
        "dnsperf": " ".join(DNSPERF_ARGS + ["-l", str(Cfg.dns_time)]),
    }
    if out["qps"] is None:
        out["status"] = "failed"
        out["reason"] = r.errline()
    return out


def _dns_log(who, e):
    lat = e.get("latency_ms") or {}
    log(f"dns/{who}: {e.get('qps')} qps, median {lat.get('median', '-')} ms, p99 {lat.get('p99', '-')} ms, "
        f"lost {e.get('lost')}, rcodes {e.get('rcodes')}")


def dns_aardvark():
    """aardvark-dns answering container-name queries with N records (its config file written directly)."""
    entry = {"label": "aardvark-dns", "status": "ok", "records": Cfg.dns_records}

    class DnsNet(Raw):
        key = "dns"

    raw = DnsNet()
    try:
        raw.open()
        (cli,) = raw.new_ctrs(1)
        with netns(raw.sb):
            o = raw.attach(cli)
            if not o.ok:
                raise RuntimeError(o.err)
        conf = os.path.join(raw.dir, "aardvark")
        os.makedirs(conf, exist_ok=True)
        n = Cfg.dns_records
        lines = [GATEWAY]
        for i in range(n):
            lines.append(f"{i:064x} {idx_ip(1000 + i)}  ctr{i},alias{i}")
        with open(os.path.join(conf, "bench"), "w") as f:
            f.write("\n".join(lines) + "\n")
        qfile = os.path.join(raw.dir, "queries.txt")
        dns_queries(qfile, n)
        with netns(raw.sb):
            r = spawn([AARDVARK, "--config", conf, "-p", "53", "run"], timeout=10)
            if not r.ok:
                raise RuntimeError(f"aardvark-dns: {r.errline()}")
        try:
            with open(os.path.join(conf, "aardvark.pid")) as f:
                REG.add_pid(int(f.read().strip()))
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
        entry.update(dnsperf(cli.path, qfile))
        _dns_log("aardvark", entry)
    except Exception as e:
        entry["status"] = "failed"
        entry["reason"] = str(e)[:300]
        log(f"dns/aardvark: failed: {e}")
    finally:
        raw.close()
    return entry


def nethook_dns_pids(run_dir):
    """`nethook dns serve` processes of this run-dir (the daemon is double-forked, not our child)."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"dns" in argv and b"serve" in argv and run_dir.encode() in argv and not _zombie(int(p)):
            found.append(int(p))
    return found


def dns_nethook():
    """nethook's own daemon: N namespaces `nethook attach`ed with --hostname ctrI (the first attach
    starts `nethook dns serve`), a client netns attached too; dnsperf from the client asks GATEWAY:53,
    which nftables redirects to the daemon on GATEWAY:15353. Then every endpoint is detached and the
    daemon must exit by itself."""
    n = Cfg.dns_records
    entry = {"label": "nethook", "status": "ok", "records": n, "records_how": f"{n} netns, one hostname each"}

    class DnsNethook(Nethook):
        network = "benchdns"
        dns = True

    nh = DnsNethook(wait_link_gone=False, key="dnsnh", label="nethook")
    attached = []
    try:
        nh.open()  # `network create` with DNS on (the default)
        srv = nh.new_ctrs(n)
        (cli,) = nh.new_ctrs(1)

        def attach(c, host):
            r = spawn(nh.argv0 + ["attach", c.path, "--network", nh.network, "--id", c.id,
                                  "--hostname", host, "-q"])
            if not r.ok:
                raise RuntimeError(f"nethook attach {c.id}: {short_err(r.errline())}")
            attached.append(c)
            return r.dt

        t0 = time.perf_counter()
        dts = []
        with netns(nh.sb):
            for i, c in enumerate(srv):
                dts.append(attach(c, f"ctr{i}"))
            attach(cli, "dnsclient")
        entry["attach_total_s"] = round(time.perf_counter() - t0, 2)
        entry["attach_ms"] = stats(dts)
        pids = nethook_dns_pids(nh.run)
        for p in pids:
            REG.add_pid(p)
        if not pids:
            raise RuntimeError("no `nethook dns serve` process after the attaches")
        entry["daemon_pids"] = len(pids)
        log(f"dns/nethook: {n + 1} endpoints attached in {entry['attach_total_s']} s "
            f"(median {entry['attach_ms']['median']} ms each), daemon pid {pids}")
        time.sleep(0.6)  # the daemon reloads records on a 250 ms tick
        qfile = os.path.join(nh.dir, "queries.txt")
        dns_queries(qfile, n)
        entry.update(dnsperf(cli.path, qfile))
        _dns_log("nethook", entry)
    except Exception as e:
        entry["status"] = "failed"
        entry["reason"] = str(e)[:300]
        log(f"dns/nethook: failed: {e}")
    finally:
        bad = 0
        t0 = time.perf_counter()
        with netns(nh.sb):
            for c in attached:
                if not spawn(nh.argv0 + ["detach", c.id, "-q"]).ok:
                    bad += 1
        entry["detach_total_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        left = nethook_dns_pids(nh.run)
        while left and time.perf_counter() - t0 < 5.0:
            time.sleep(0.1)
            left = nethook_dns_pids(nh.run)
        entry["daemon_exit_s"] = round(time.perf_counter() - t0, 2) if not left else None
        if bad:
            log(f"dns/nethook: {bad} detaches failed")
            entry["detach_failed"] = bad
        if left:
            log(f"dns/nethook: daemon {left} still running 5 s after the last detach; killing it")
            entry["daemon_left"] = left
            kill_pids(left)
        else:
            log(f"dns/nethook: {len(attached)} detached in {entry['detach_total_s']} s; "
                f"daemon gone {entry['daemon_exit_s']} s after the last detach")
        nh.close()
    return entry


def case_dns(res):
    """Container-name queries, N records: aardvark-dns 1.4 and nethook's daemon, same dnsperf run."""
    res["dns"] = {"aardvark": dns_aardvark()}
    wait_quiet()
    res["dns"]["nethook"] = dns_nethook()


# --------------------------------------------------------------------------------------------
# report


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "cpu": cpu,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_at_start": load,
    }


def fmt(x, nd=1):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}" if nd else f"{x:.0f}"
    return f"{x:.2f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.1f}x"


TOOL_ORDER = ["nethook", "nethookrace", "nethookcni", "netavark", "cni", "raw"]


def ordered(d):
    return sorted(d.items(), key=lambda kv: TOOL_ORDER.index(kv[0]) if kv[0] in TOOL_ORDER else 99)


def write_markdown(res, path):
    m = res["machine"]
    L = []
    L.append("# nethook benchmark results\n")
    L.append(
        f"- date: {res['date']}  \n- machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB, "
        f"kernel {m['kernel']}, load at start {' '.join(m['loadavg_at_start'])}  \n"
        f"- mode: {'quick' if res['config']['quick'] else 'full'}; {res['config']['rounds']} rounds x "
        f"{res['config']['repeats']} samples per tool, {res['config']['warmup']} warm-up; wall time "
        f"{res.get('wall_seconds', 0):.0f} s  \n"
        f"- versions: " + "; ".join(f"{k}: {v}" for k, v in res["versions"].items()) + "  \n"
    )
    if "floor" in res:
        L.append(
            f"- harness floor (spawning /bin/true the same way): "
            f"{fmt(res['floor']['spawn_true']['median'])} ms median; included in every figure below"
            + (
                f" (hyperfine -N measures {fmt(res['floor']['hyperfine_true']['median'])} ms for the same exec)"
                if "hyperfine_true" in res["floor"]
                else ""
            )
            + "\n"
        )
    fw = res.get("checks", {}).get("firewall_tables_after_setup")
    if fw:
        L.append(
            "- nftables tables each tool had made in its sandbox after its first container: "
            + "; ".join(f"{k}: {', '.join(v) if v else 'none'}" for k, v in fw.items() if k != "nethookrace")
            + (
                " (nethook programs no firewall yet: its figures contain no firewall work)"
                if "nethook" in fw and not fw["nethook"]
                else ""
            )
            + "\n"
        )
    nz = res.get("noise_summary")
    if nz:
        L.append(
            f"- noise: the per-round medians of a tool's setup spread by {nz['setup_median_spread_pct']}% "
            f"(median over tools; worst {nz['setup_worst_pct']}% for {nz['setup_worst_tool']}), "
            f"teardown {nz['teardown_median_spread_pct']}% (worst {nz['teardown_worst_pct']}% "
            f"for {nz['teardown_worst_tool']}). Spread = (max - min) / median of the round medians.\n"
        )
    lo = res.get("leftovers", {})
    L.append(
        f"- safety: root namespace's links, addresses, routes and nftables tables "
        f"{'unchanged' if res.get('root_namespace_unchanged') else 'CHANGED (see results.json)'}; "
        f"left behind: {len(lo.get('netns', []))} netns, {len(lo.get('processes', []))} processes"
        + ("" if res.get("complete", True) else "; the run was INTERRUPTED, tables are partial")
        + "\n"
    )
    L.append("")
    base = res.get("base")
    if base:
        for variant, title in (("noports", "no published port"), ("port1", "one published port")):
            if variant not in base:
                continue
            L.append(f"## Setup and teardown per container ({title})\n")
            L.append("Whole-process wall time, milliseconds; one network with one other container attached.\n")
            L.append(
                "| tool | setup median | setup p90 | teardown median | teardown p90 | samples | setup vs nethook | noise (setup/teardown) |"
            )
            L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
            nh = base[variant].get("nethook", {})
            nhs = nh.get("setup", {}).get("median") if nh.get("status") == "ok" else None
            for k, e in ordered(base[variant]):
                if e.get("status") != "ok":
                    L.append(f"| {e['label']} | {e.get('status')} | | | | | | {e.get('reason', '')} |")
                    continue
                s, t = e["setup"], e["teardown"]
                L.append(
                    f"| {e['label']} | {fmt(s['median'])} | {fmt(s['p90'])} | {fmt(t['median'])} | "
                    f"{fmt(t['p90'])} | {s['n']} | {ratio(s['median'], nhs) if k != 'nethook' else '1.0x'} | "
                    f"±{e['noise'].get('setup', '–')}% / ±{e['noise'].get('teardown', '–')}% |"
                )
            L.append("")
        tgt = res.get("targets")
        if tgt:
            L.append("Targets of issue 3 / issue 2 (same run):\n")
            for line in tgt:
                L.append(f"- {line}")
            L.append("")
    sc = res.get("scale_containers")
    if sc:
        ks = sorted({int(k) for e in sc.values() for k in e.get("levels", {})})
        L.append("## Cost of the k-th container on one network\n")
        L.append("Setup median / teardown median, ms (k-1 containers stay attached). Plot: `cost_vs_containers.png`.\n")
        L.append("| tool | " + " | ".join(f"k={k}" for k in ks) + " | k=last / k=first |")
        L.append("| --- | " + " | ".join("---:" for _ in ks) + " | ---: |")
        for key, e in ordered(sc):
            if e.get("status") != "ok":
                L.append(f"| {e['label']} | {e.get('status')}: {e.get('reason', '')} |")
                continue
            cells = []
            for k in ks:
                lv = e["levels"].get(str(k))
                if lv and lv["setup"]:
                    cells.append(f"{fmt(lv['setup']['median'])} / {fmt(lv['teardown']['median'])}")
                else:
                    cells.append("–")
            first = e["levels"].get(str(ks[0]), {}).get("setup")
            last = e["levels"].get(str(ks[-1]), {}).get("setup")
            r = ratio(last["median"], first["median"]) if first and last else "–"
            L.append(f"| {e['label']} | " + " | ".join(cells) + f" | {r} |")
        L.append("")
    sp = res.get("scale_ports")
    if sp:
        ps = sorted({int(k) for e in sp.values() for k in e.get("levels", {})})
        L.append("## Cost of a container with one published port, P ports already published\n")
        L.append(
            f"Setup median / teardown median, ms; the P ports belong to other containers "
            f"({res['config']['ports_per_filler']} each). Plot: `cost_vs_ports.png`.\n"
        )
        L.append("| tool | " + " | ".join(f"P={p}" for p in ps) + " |")
        L.append("| --- | " + " | ".join("---:" for _ in ps) + " |")
        for key, e in ordered(sp):
            if e.get("status") != "ok":
                L.append(f"| {e['label']} | {e.get('status')}: {e.get('reason', '')} |" + " |" * (len(ps) - 1))
                continue
            cells = []
            for p in ps:
                lv = e["levels"].get(str(p))
                cells.append(
                    f"{fmt(lv['setup']['median'])} / {fmt(lv['teardown']['median'])}" if lv and lv["setup"] else "–"
                )
            L.append(f"| {e['label']} | " + " | ".join(cells) + " |")
        fills = [
            f"{e['label']} " + ", ".join(f"{p} in {fmt(v)} s" for p, v in e["publish_seconds"].items() if int(p))
            for _, e in ordered(sp)
            if e.get("status") == "ok" and e.get("publish_seconds")
        ]
        if fills:
            L.append("")
            L.append("Time the tool itself spent publishing the P ports (the filler containers' setups): " + "; ".join(fills) + ".")
        L.append("")
    cc = res.get("concurrency")
    if cc:
        L.append(f"## {res['config']['conc']} containers at once on one network\n")
        L.append("| tool | setup: all done (ms) | setup p99 per hook | setup median per hook | teardown: all done | teardown p99 | failed |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for key, e in ordered(cc):
            if e.get("status") != "ok":
                L.append(f"| {e['label']} | {e.get('status')}: {e.get('reason', '')} | | | | | |")
                continue
            s, t = e["setup"], e["teardown"]
            L.append(
                f"| {e['label']} | {fmt(s['total_ms'])} | {fmt(s['p99_ms'])} | {fmt(s['median_ms'])} | "
                f"{fmt(t['total_ms'])} | {fmt(t['p99_ms'])} | {s['failed'] + t['failed']} |"
            )
        L.append("")
    tp = res.get("throughput")
    if tp:
        L.append(f"## Throughput (iperf3 TCP, -t {res['config']['iperf_time']}, Gbit/s, median of {res['config']['iperf_reps']})\n")
        cols = ["ctr_to_ctr", "host_to_ctr", "host_to_ctr_published", "hairpin"]
        L.append("| tool | container → container | host → container | host → published port | hairpin (own published port) |")
        L.append("| --- | ---: | ---: | ---: | ---: |")
        for key, e in ordered(tp):
            if e.get("status") != "ok":
                L.append(f"| {e['label']} | {e.get('status')}: {e.get('reason', '')} | | | |")
                continue
            cells = []
            for c in cols:
                v = e.get(c, {})
                cells.append(f"{v['gbps']:.1f}" if v.get("status") == "ok" else v.get("status", "–"))
            L.append(f"| {e['label']} | " + " | ".join(cells) + " |")
        L.append("")
    ov = res.get("overlay")
    if ov:
        L.append("## Overlay throughput across hosts\n")
        if ov.get("status") != "ok":
            L.append(f"{ov.get('status')}: {ov.get('reason', '')}\n")
        else:
            L.append(
                f"iperf3 TCP, -t {res['config']['iperf_time']}, Gbit/s, median of {res['config']['iperf_reps']} "
                f"(underlay and overlay runs interleaved). Two host namespaces on veths to an underlay bridge "
                f"in a sandbox namespace, etcd on the sandbox's underlay address, `nethook cluster join` and "
                f"`nethook agent` per host, network `{OV_NET}` (`--driver overlay --subnet {OV_SUBNET}`), one "
                f"netns per host attached with `nethook attach` (eth0 MTU {ov.get('container_mtu')}); "
                f"each host had the route to the other's block {ov.get('route_ready_s')} s after the second attach.\n"
            )
            L.append("| underlay | host A → host B (underlay) | container on A → container on B (overlay) | overlay / underlay |")
            L.append("| --- | ---: | ---: | ---: |")
            for v, title in (
                ("unshaped", "unshaped veths (one kernel, CPU-bound)"),
                ("shaped", f"shaped like a NIC: tbf {OV_SHAPE} on both hosts' underlay veths"),
            ):
                e = ov.get(v, {})
                if e.get("status") == "ok":
                    L.append(f"| {title} | {e['underlay_gbps']:.2f} | {e['overlay_gbps']:.2f} | {e['ratio'] * 100:.0f}% |")
                else:
                    L.append(f"| {title} | {e.get('status', '–')}: {e.get('reason', '')} | | |")
            L.append("")
            sh, un = ov.get("shaped", {}), ov.get("unshaped", {})
            if sh.get("status") == "ok":
                L.append(
                    f"Issue 9 (overlay ≥ 80% of the underlay), judged on the wire-limited pair: "
                    f"{sh['ratio'] * 100:.0f}%: {'met' if sh['ratio'] >= 0.8 else 'NOT met'}"
                    + (f"; unshaped (one kernel) {un['ratio'] * 100:.0f}%: {OV_WHY_UNSHAPED}." if un.get("status") == "ok" else ".")
                    + "\n"
                )
    dn = res.get("dns")
    if dn:
        L.append("## DNS: container-name queries\n")
        L.append("| server | records | qps | latency median (ms) | p99 (ms) | lost |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: |")
        for k in ("aardvark", "nethook"):
            a = dn.get(k)
            if not a:
                continue
            if a.get("status") == "ok":
                lat = a.get("latency_ms") or {}
                L.append(
                    f"| {a['label']} | {a['records']} | {fmt(a['qps'])} | {fmt(lat.get('median'), 2)} | "
                    f"{fmt(lat.get('p99'), 2)} | {a.get('lost')} |"
                )
            else:
                L.append(f"| {a.get('label', k)} | {a.get('records', '–')} | {a.get('status')}: "
                         f"{a.get('reason', '')} | | | |")
        nh = dn.get("nethook", {})
        if nh.get("status") == "ok":
            L.append("")
            L.append(
                f"dnsperf {nh.get('dnsperf')} from a container netns to {GATEWAY}:53, random existing names. "
                f"nethook: {nh['records_how']}, attached in {nh.get('attach_total_s')} s, detached in "
                f"{nh.get('detach_total_s')} s; "
                + (f"daemon exited {nh['daemon_exit_s']} s after the last detach."
                   if nh.get("daemon_exit_s") is not None else "daemon did NOT exit after the last detach.")
            )
        L.append("")
    L.append("n/a: the tool cannot do the case (reason given); pending: nethook does not have the feature yet.\n")
    with open(path, "w") as f:
        f.write("\n".join(L))


def update_readme(md_path, readme_path, plots):
    """Put the headline tables and the scaling plot between the README's markers."""
    try:
        with open(readme_path) as f:
            readme = f.read()
        with open(md_path) as f:
            md = f.read()
    except OSError:
        return
    b, e = "<!-- results:begin -->", "<!-- results:end -->"
    if b not in readme or e not in readme:
        return
    parts = md.split("\n## ")
    head = parts[0].split("\n", 1)[1].strip()  # without the title
    keep = [p for p in parts[1:] if p.startswith(("Setup and teardown", "Cost of the k-th"))]
    body = [head, ""]
    for p in keep:
        body.append("### " + p.strip())
        body.append("")
    if "cost_vs_containers.png" in plots:
        body.append("![cost vs container count](results/cost_vs_containers.png)\n")
    body.append("Everything else (published ports, concurrency, throughput, DNS): `results/results.md`.")
    new = readme.split(b)[0] + b + "\n" + "\n".join(body) + "\n" + e + readme.split(e, 1)[1]
    with open(readme_path, "w") as f:
        f.write(new)


def short_reason(r):
    if "not implemented" in r:
        return "not implemented yet"
    if "no firewall" in r:
        return "no firewall by design"
    return r[:40]


def write_plots(res, outdir):
    gp = shutil.which("gnuplot", path=BASE_ENV["PATH"])
    if not gp:
        log("gnuplot missing: no plots")
        return []
    made = []
    specs = [
        ("scale_containers", "cost_vs_containers.png", "containers on the network (k-th container)", "k"),
        ("scale_ports", "cost_vs_ports.png", "published ports already present", "P"),
    ]
    for key, fname, xlabel, _ in specs:
        data = res.get(key)
        if not data:
            continue
        xs = sorted({int(k) for e in data.values() for k in e.get("levels", {})})
        if not xs:
            continue
        tools = [(k, e) for k, e in ordered(data)]
        datfile = os.path.join(STATE_ROOT, f"{key}.dat")
        os.makedirs(STATE_ROOT, exist_ok=True)
        with open(datfile, "w") as f:
            for x in xs:
                row = [str(x)]
                for _, e in tools:
                    lv = e.get("levels", {}).get(str(x))
                    for ph in ("setup", "teardown"):
                        v = lv and lv.get(ph) and lv[ph]["median"]
                        row.append(f"{v}" if v else "NaN")
                f.write(" ".join(row) + "\n")
        colors = {"nethook": "#d62728", "nethookcni": "#ff7f0e", "netavark": "#1f77b4", "cni": "#2ca02c",
                  "raw": "#7f7f7f"}
        na_notes = [f"{e['label']}: {e.get('status')} ({short_reason(e.get('reason', ''))})"
                    for _, e in tools if e.get("status") != "ok"]
        plots_s, plots_t = [], []
        for i, (k, e) in enumerate(tools):
            if e.get("status") != "ok":
                continue
            col = colors.get(k, "#9467bd")
            plots_s.append(
                f"'{datfile}' using 1:{2 + 2 * i} with linespoints lw 2 pt 7 lc rgb '{col}' title '{e['label']}'"
            )
            plots_t.append(
                f"'{datfile}' using 1:{3 + 2 * i} with linespoints lw 2 pt 7 lc rgb '{col}' title '{e['label']}'"
            )
        if not plots_s:
            continue
        png = os.path.join(outdir, fname)
        m = res["machine"]
        script = [
            "set terminal pngcairo size 1200,520 enhanced font 'DejaVu Sans,10'",
            f"set output '{png}'",
            "set multiplot layout 1,2 title \"nethook bench, "
            + f"{res['date'][:10]}, {m['nproc']} CPUs, kernel {m['kernel']}"
            + ("\\n" + "; ".join(na_notes).replace('"', "'") if na_notes else "")
            + "\" font ',11'",
            "set grid",
            "set key below",
            "set logscale y",
            f"set xlabel '{xlabel}'",
            "set ylabel 'ms (median, whole process)'",
            "set datafile missing 'NaN'",
            "set title 'setup'",
            "plot " + ", ".join(plots_s),
            "set title 'teardown'",
            "plot " + ", ".join(plots_t),
            "unset multiplot",
        ]
        r = subprocess.run([gp], input="\n".join(script), text=True, capture_output=True)
        if r.returncode != 0:
            log(f"gnuplot failed for {fname}: {r.stderr.strip()[:300]}")
        else:
            made.append(fname)
    return made


def summarize(res):
    base = res.get("base", {})
    nz = {"setup": [], "teardown": []}
    for variant in base.values():
        for k, e in variant.items():
            if e.get("status") == "ok":
                for ph in nz:
                    v = e["noise"].get(ph)
                    if v is not None:
                        nz[ph].append((v, e["label"] + (" (1 port)" if variant is base.get("port1") else "")))
    if nz["setup"]:
        ws = max(nz["setup"])
        wt = max(nz["teardown"]) if nz["teardown"] else (None, "")
        res["noise_summary"] = {
            "setup_median_spread_pct": round(statistics.median(v for v, _ in nz["setup"]), 1),
            "setup_worst_pct": ws[0],
            "setup_worst_tool": ws[1],
            "teardown_median_spread_pct": round(statistics.median(v for v, _ in nz["teardown"]), 1)
            if nz["teardown"]
            else None,
            "teardown_worst_pct": wt[0],
            "teardown_worst_tool": wt[1],
        }
    tg = []
    b = base.get("noports", {})
    nh = b.get("nethook", {})
    if nh.get("status") == "ok":
        s = nh["setup"]["median"]
        for k, want in (("cni", 8), ("netavark", 10)):
            e = b.get(k, {})
            if e.get("status") == "ok":
                r = e["setup"]["median"] / s
                tg.append(
                    f"nethook setup {s:.2f} ms vs {e['label']} {e['setup']['median']:.1f} ms: "
                    f"{r:.1f}x faster (target ≥ {want}x): {'met' if r >= want else 'NOT met'}"
                )
        p1 = base.get("port1", {}).get("nethook", {})
        if p1.get("status") == "ok":
            s1, t1 = p1["setup"]["median"], p1["teardown"]["median"]
            tg.append(
                f"issue 2: nethook createRuntime with one published port {s1:.2f} ms (≤ 5 ms: "
                f"{'met' if s1 <= 5 else 'NOT met'}), poststop {t1:.2f} ms (≤ 5 ms: {'met' if t1 <= 5 else 'NOT met'})"
            )
        else:
            tg.append(
                f"issue 2: nethook setup {s:.2f} ms without a published port (≤ 5 ms: "
                f"{'met' if s <= 5 else 'NOT met'}), poststop {nh['teardown']['median']:.2f} ms (≤ 5 ms: "
                f"{'met' if nh['teardown']['median'] <= 5 else 'NOT met'}); with one published port: "
                f"{p1.get('status', 'n/a')} ({p1.get('reason', '')})"
            )
    sc = res.get("scale_containers", {}).get("nethook", {})
    if sc.get("status") == "ok" and sc.get("levels"):
        ks = sorted(int(k) for k in sc["levels"])
        f, l = sc["levels"][str(ks[0])]["setup"], sc["levels"][str(ks[-1])]["setup"]
        if f and l:
            r = l["median"] / f["median"]
            tg.append(
                f"nethook flatness: container {ks[-1]} costs {r:.2f}x container {ks[0]} "
                f"(target ≤ 1.25x): {'met' if r <= 1.25 else 'NOT met'}"
            )
    sh = res.get("overlay", {}).get("shaped", {})
    if sh.get("status") == "ok":
        un = res["overlay"].get("unshaped", {})
        tg.append(
            f"issue 9: overlay {sh['overlay_gbps']:.2f} vs underlay {sh['underlay_gbps']:.2f} Gbit/s on a "
            f"{OV_SHAPE} underlay: {sh['ratio'] * 100:.0f}% (target ≥ 80%): {'met' if sh['ratio'] >= 0.8 else 'NOT met'}"
            + (f" (unshaped, one kernel: {un['ratio'] * 100:.0f}%)" if un.get("status") == "ok" else "")
        )
    res["targets"] = tg


# --------------------------------------------------------------------------------------------
# main


def leftovers():
    """What of ours is still there (for the final check)."""
    names = our_netns()
    procs = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if STATE_ROOT in cmd or PREFIX in cmd:
            procs.append((int(p), cmd[:120]))
    return names, procs


def root_fingerprint():
    """The root namespace's links, addresses, routes and ruleset, to show the run left them alone."""
    fp = {}
    for key, argv in (
        ("links", [IP, "-o", "link", "show"]),
        ("addrs", [IP, "-o", "addr", "show"]),
        ("routes", [IP, "route", "show", "table", "all"]),
    ):
        out = spawn(argv).out.decode()
        # counters and the like change on their own; keep what a change would be about
        fp[key] = sorted(re.sub(r"(qlen \d+|valid_lft \S+|preferred_lft \S+|\\.*$)", "", l).strip()
                         for l in out.splitlines())
    nft = shutil.which("nft", path=BASE_ENV["PATH"])
    if nft:
        fp["nft_tables"] = spawn([nft, "list", "tables"]).out.decode().split("\n")
    return fp


def main():
    global IP, IPERF3, DNSPERF
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it creates network namespaces)")
    if len(sys.argv) > 1 and sys.argv[1] == "--cleanup":
        IP = need("ip")
        cleanup_all()
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--cleanup-stale":
        IP = need("ip")
        cleanup_stale()
        return
    IP = need("ip")
    need(NETHOOK)
    if "netavark" in Cfg.tools:
        need(NETAVARK)
    if "cni" in Cfg.tools:
        for p in ("bridge", "host-local", "portmap"):
            need(os.path.join(CNI_PATH, p))
    IPERF3 = need("iperf3") if {"iperf", "overlay"} & Cfg.cases else None
    DNSPERF = need("dnsperf") if "dns" in Cfg.cases and Cfg.dns else None
    if "dns" in Cfg.cases and Cfg.dns:
        need(AARDVARK)

    def on_signal(sig, frame):
        raise KeyboardInterrupt(f"signal {sig}")

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    os.makedirs(STATE_ROOT, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    t_start = time.time()
    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": Cfg.as_dict(),
        "versions": {},
    }
    tools = [t.strip() for t in Cfg.tools if t.strip()]
    ok = False
    fp0 = root_fingerprint()
    try:
        for t in make_tools(tools):
            res["versions"][t.key] = t.version()
        if Cfg.dns and "dns" in Cfg.cases:
            res["versions"]["aardvark-dns"] = spawn([AARDVARK, "--version"]).out.decode().strip()
        res["versions"]["kernel"] = platform.release()
        log(f"bench: {'quick' if Cfg.quick else 'full'} run, tools {tools}, tag {TAG}")
        steps = [
            ("floor", lambda: case_floor(res)),
            ("base", lambda: case_base(res, tools)),
            ("scale", lambda: case_scale(res, tools)),
            ("ports", lambda: case_ports(res, tools)),
            ("conc", lambda: case_conc(res, [t for t in tools if t != "raw"] + (["raw"] if "raw" in tools else []))),
            ("iperf", lambda: case_iperf(res, tools)),
            ("overlay", lambda: case_overlay(res)),
            ("dns", lambda: case_dns(res) if Cfg.dns else None),
        ]
        for name, fn in steps:
            if name not in Cfg.cases:
                continue
            wait_quiet()
            t0 = time.time()
            try:
                fn()
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one broken case does not lose the others
                log(f"case {name} FAILED: {e}")
                res.setdefault("case_errors", {})[name] = str(e)[:500]
            log(f"case {name} done in {time.time() - t0:.0f}s")
            res.setdefault("case_seconds", {})[name] = round(time.time() - t0, 1)
        ok = True
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
    finally:
        cleanup_all()
        res["wall_seconds"] = round(time.time() - t_start, 1)
        res["complete"] = ok
        summarize(res)
        names, procs = leftovers()
        res["leftovers"] = {"netns": names, "processes": procs}
        fp1 = root_fingerprint()
        changed = sorted(k for k in fp0 if fp0[k] != fp1.get(k))
        res["root_namespace_unchanged"] = not changed
        if changed:
            res["root_namespace_changed"] = {k: {"before": fp0[k], "after": fp1.get(k)} for k in changed}
            log(f"WARNING: the root namespace's {', '.join(changed)} changed during the run (see results.json)")
        if names or procs:
            log(f"WARNING: left behind: netns {names}, processes {procs}")
        with open(os.path.join(RESULTS, "results.json"), "w") as f:
            json.dump(res, f, indent=1, sort_keys=False)
        write_markdown(res, os.path.join(RESULTS, "results.md"))
        plots = write_plots(res, RESULTS)
        if ok and os.path.abspath(RESULTS) == os.path.join(HERE, "results"):
            update_readme(os.path.join(RESULTS, "results.md"), os.path.join(HERE, "README.md"), plots)
        shutil.rmtree(STATE_ROOT, ignore_errors=True)
        log(f"results: {RESULTS}/results.json, results.md" + (", " + ", ".join(plots) if plots else ""))
        if res.get("targets"):
            for line in res["targets"]:
                log("target: " + line)
    if not ok:
        sys.exit(130)


if __name__ == "__main__":
    main()
