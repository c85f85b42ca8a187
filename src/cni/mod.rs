//! nethook as a CNI plugin (issue 10): when `CNI_COMMAND` is in the environment the binary speaks
//! the CNI protocol (spec 1.1; results in 0.3.0-1.1.0 shapes) instead of its command line.
//!
//! - The plugin config names a nethook network (`"network": "web"`), or gives inline settings
//!   (`subnet`, `gateway`, `ipRange`, `bridge`, `mtu`, `ipMasq`, `containerDns`) for a network
//!   made on first use, named `network` or else the conflist's `name`; neither: the default
//!   network. `configDir` / `runDir` pick nethook's dirs (else `NETHOOK_CONFIG_DIR` /
//!   `NETHOOK_RUN_DIR`, else the defaults; all ignored unless the real uid is 0).
//! - ADD, DEL, CHECK, GC go through the same transactions as the hook (`ops`), with endpoint
//!   records of source `cni` keyed by `CNI_CONTAINERID`; each attachment's `interface` is the
//!   `CNI_IFNAME` it was added with. The first ADD of a container attaches; an ADD with another
//!   ifname on another network connects that network too (`ops::attach::connect_as`, no
//!   default route and no port mappings on it). DEL removes the attachment of `CNI_IFNAME`.
//! - A container networked by the hook is refused here (code 101), and the hook refuses one
//!   networked by CNI; DEL and GC never touch a hook-made endpoint.

pub mod commands;
pub mod types;

use crate::state::{Dirs, DEFAULT_CONFIG_DIR, DEFAULT_RUN_DIR};
use std::io::{Read, Write};
use types::{code, CniError, CniResult, NetConf, LATEST};

/// Stdin is capped like the hook's (1 MiB).
const MAX_INPUT: u64 = 1 << 20;

/// The environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            command: get("CNI_COMMAND").unwrap_or_default(),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
        }
    }

    pub fn require<'a>(&self, name: &str, v: &'a Option<String>) -> CniResult<&'a str> {
        v.as_deref().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                format!("{name} is not set"),
                format!("the runtime must set {name} for {}", self.command),
            )
        })
    }
}

/// True when this process should be a CNI plugin.
pub fn requested() -> bool {
    std::env::var_os("CNI_COMMAND").is_some()
}

/// Run one CNI command: result or error JSON on stdout; returns the exit code.
pub fn main() -> i32 {
    let env = Env::from_process();
    // Whatever nethook execs from here (the DNS daemon, `nethook dns serve`) must run as the
    // command line, not as another CNI invocation. Single-threaded still: removing is sound.
    for k in [
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
    ] {
        std::env::remove_var(k);
    }
    let mut input = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut input);
    let (version, out) = match read {
        Err(e) => (
            LATEST.to_string(),
            Err(CniError::new(
                code::IO_FAILURE,
                "cannot read the network configuration on stdin",
                e.to_string(),
            )),
        ),
        Ok(_) if input.len() as u64 > MAX_INPUT => (
            LATEST.to_string(),
            Err(CniError::new(
                code::DECODING_FAILURE,
                "the network configuration on stdin is larger than 1 MiB",
                "",
            )),
        ),
        Ok(_) => run(&env, &input),
    };
    let (json, rc) = match out {
        Ok(Some(v)) => (Some(v), 0),
        Ok(None) => (None, 0),
        Err(e) => {
            eprintln!(
                "nethook: cni {} {}: {}: {}",
                env.command,
                env.container_id.as_deref().unwrap_or("-"),
                e.msg,
                e.details
            );
            (Some(e.to_json(&version)), 1)
        }
    };
    if let Some(v) = json {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }
    rc
}

/// Parse and dispatch; returns the version to answer in and the JSON to print (None: nothing,
/// as DEL, GC and STATUS print on success).
pub fn run(env: &Env, input: &[u8]) -> (String, CniResult<Option<serde_json::Value>>) {
    let conf = match NetConf::parse(input) {
        Ok(c) => c,
        Err(e) => return (LATEST.to_string(), Err(e)),
    };
    let version = conf
        .cni_version
        .clone()
        .filter(|v| types::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST.to_string());
    if env.command == "VERSION" {
        return (version.clone(), Ok(Some(commands::version(&version))));
    }
    let r = (|| {
        conf.version()?;
        if !nix::unistd::getuid().is_root() || !nix::unistd::geteuid().is_root() {
            return Err(CniError::new(
                code::INVALID_ENV,
                "nethook's CNI plugin must run as root",
                "the runtime runs CNI plugins as root; a setuid nethook does not speak CNI",
            ));
        }
        let dirs = dirs(&conf);
        match env.command.as_str() {
            "ADD" => commands::add(&dirs, env, &conf).map(Some),
            "DEL" => commands::del(&dirs, env, &conf).map(|()| None),
            "CHECK" => commands::check(&dirs, env, &conf).map(|()| None),
            "GC" => commands::gc(&dirs, &conf).map(|()| None),
            "STATUS" => commands::status(&dirs, &conf).map(|()| None),
            other => Err(CniError::new(
                code::INVALID_ENV,
                format!("unknown CNI_COMMAND {other:?}"),
                "use ADD, DEL, CHECK, GC, STATUS or VERSION",
            )),
        }
    })();
    (version, r)
}

/// nethook's dirs for this invocation: the netconf's, else the env's, else the defaults.
pub fn dirs(conf: &NetConf) -> Dirs {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(Into::into)
    };
    let config = conf
        .config_dir
        .clone()
        .or_else(|| env("NETHOOK_CONFIG_DIR"))
        .unwrap_or_else(|| DEFAULT_CONFIG_DIR.into());
    let run = conf
        .run_dir
        .clone()
        .or_else(|| env("NETHOOK_RUN_DIR"))
        .unwrap_or_else(|| DEFAULT_RUN_DIR.into());
    Dirs::new(config, run)
}
