//! `nethook hook createRuntime|poststop`: the OCI front door. Nothing on stdout; one line on
//! stderr and exit 1 on failure, so the runtime aborts the container.

use crate::config::DEFAULT_NETWORK;
use crate::error::Error;
use crate::oci::{self, HookArgs};
use crate::ops::attach::{attach, AttachRequest, FilesPlan};
use crate::ops::detach::{detach, LinkCleanup};
use crate::rootfs::Target;
use crate::state::Dirs;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    #[value(
        name = "createRuntime",
        alias = "create-runtime",
        alias = "prestart",
        alias = "createruntime"
    )]
    CreateRuntime,
    #[value(name = "poststop")]
    Poststop,
}

#[derive(Args, Debug)]
pub struct HookCmd {
    #[arg(value_enum)]
    pub stage: Stage,
    #[arg(long)]
    pub network: Vec<String>,
    #[arg(long)]
    pub publish: Vec<String>,
    #[arg(long)]
    pub ip: Option<String>,
    #[arg(long)]
    pub mac: Option<String>,
    #[arg(long)]
    pub alias: Vec<String>,
}

pub fn run(dirs: &Dirs, cmd: &HookCmd) -> anyhow::Result<()> {
    let state = oci::read_state(std::io::stdin().lock())?;
    let id = state.id.clone();
    let r = match cmd.stage {
        Stage::CreateRuntime => create(dirs, cmd, state),
        // An endpoint the CNI plugin made is CNI's to remove (its DEL), never the hook's.
        Stage::Poststop => match crate::state::endpoint::load(dirs, &state.id) {
            Ok(Some(ep)) if ep.source == "cni" => Ok(()),
            _ => detach(dirs, &state.id, None, LinkCleanup::Background),
        },
    };
    // Every log line names the container.
    r.map_err(|e| anyhow::anyhow!("container {id}: {e}"))
}

fn create(dirs: &Dirs, cmd: &HookCmd, state: oci::HookState) -> Result<(), Error> {
    let cfg = oci::load_config(&state.bundle)?;
    // config.json's annotations, overridden by the state's (the runtime's view is current).
    let mut ann = cfg.annotations.clone();
    ann.extend(state.annotations.clone());
    let args = HookArgs {
        networks: cmd.network.clone(),
        publish: cmd.publish.clone(),
        ip: cmd.ip.clone(),
        mac: cmd.mac.clone(),
        aliases: cmd.alias.clone(),
    };
    let mut wants = oci::wants(&args, &ann, DEFAULT_NETWORK)?;
    if wants.disabled {
        return Ok(());
    }
    let netns = match cfg.netns() {
        Some(Some(path)) => path,
        Some(None) => {
            let pid = match state.pid {
                Some(p) if p > 0 => p,
                _ => return Err(Error::invalid(
                    "OCI state",
                    "has no container pid",
                    "register nethook as a createRuntime hook, where the runtime passes the pid",
                )),
            };
            let p = PathBuf::from(format!("/proc/{pid}/ns/net"));
            if !PathBuf::from(format!("/proc/{pid}")).exists() {
                return Err(Error::invalid(
                    format!("container process {pid}"),
                    "has exited",
                    "check why the container's init died",
                ));
            }
            p
        }
        // No network namespace: the container shares the host's. Without a network asked
        // for, that is the host network; a network asked for is refused by attach (it needs a
        // namespace of its own).
        None => {
            if wants.default_network {
                wants.networks = vec![crate::names::NetworkName::new("host")?];
            }
            PathBuf::from("/proc/self/ns/net")
        }
    };
    let hostname = match &cfg.hostname {
        Some(h) if !h.is_empty() => h.clone(),
        _ => state.id.to_string(),
    };
    oci::check_dns_name("hostname", &hostname)?;
    let files = cfg.rootfs(&state.bundle).map(|rootfs| {
        let target = |path: &'static str| match cfg.bind_source(path) {
            Some(src) => Target::BindSource(src),
            None => Target::InRoot {
                rootfs: rootfs.clone(),
                path,
            },
        };
        FilesPlan {
            hosts: target("/etc/hosts"),
            hostname: target("/etc/hostname"),
            resolv: target("/etc/resolv.conf"),
        }
    });
    let req = AttachRequest {
        id: state.id.clone(),
        netns,
        hostname,
        wants,
        ifname: None,
        files,
        source: "hook",
        pinned: None,
        owner: None,
        container_pid: state.pid.filter(|p| *p > 0).map(|p| p as u32),
    };
    attach(dirs, &req).map(|_| ())
}
