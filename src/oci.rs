//! Hook input: the OCI state on stdin plus the bundle's config.json, turned into what the attach
//! and detach transactions need. Everything is validated here, before any file or link is touched.

use crate::error::{Error, Result};
use crate::names::{ContainerId, Mac, NetworkName};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Hook stdin is capped at 1 MiB (DESIGN.md section 9).
pub const MAX_STATE_BYTES: u64 = 1 << 20;

pub const ANN_NETWORK: &str = "nethook.network";
pub const ANN_PUBLISH: &str = "nethook.publish";
pub const ANN_IP: &str = "nethook.ip";
pub const ANN_MAC: &str = "nethook.mac";
pub const ANN_ALIASES: &str = "nethook.aliases";
pub const ANN_DISABLE: &str = "nethook.disable";

/// The parsed OCI state.
#[derive(Debug, Clone)]
pub struct HookState {
    pub id: ContainerId,
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    pub annotations: HashMap<String, String>,
}

/// Read and parse the state JSON (runc's and crun's shapes both), capped at 1 MiB.
pub fn read_state(input: impl Read) -> Result<HookState> {
    let mut buf = Vec::new();
    input
        .take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            Error::io(
                "reading the OCI state on stdin",
                e,
                "run nethook as an OCI hook",
            )
        })?;
    parse_state(&buf)
}

pub fn parse_state(buf: &[u8]) -> Result<HookState> {
    if buf.len() as u64 > MAX_STATE_BYTES {
        return Err(Error::invalid(
            "OCI state on stdin",
            "is larger than 1 MiB",
            "pass the runtime's state JSON",
        ));
    }
    if buf.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::invalid(
            "OCI state on stdin",
            "is empty",
            "run nethook as an OCI hook, which gets the state JSON on stdin",
        ));
    }
    let st: oci_spec::runtime::State = serde_json::from_slice(buf).map_err(|e| {
        Error::invalid(
            "OCI state on stdin",
            format!("is not valid state JSON ({e})"),
            "pass the runtime's state JSON",
        )
    })?;
    if st.id().is_empty() {
        return Err(Error::invalid(
            "OCI state on stdin",
            "has no container id",
            "pass the runtime's state JSON",
        ));
    }
    let id = ContainerId::new(st.id())?;
    Ok(HookState {
        id,
        pid: *st.pid(),
        bundle: st.bundle().clone(),
        annotations: st.annotations().clone().unwrap_or_default(),
    })
}

/// The parts of config.json nethook reads. Parsed leniently (only these fields), so a config a
/// runtime accepts is never refused for a field nethook does not use.
#[derive(Debug, Default, Deserialize)]
pub struct BundleConfig {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub root: Option<Root>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    #[serde(default)]
    pub linux: Option<Linux>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Root {
    pub path: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
pub struct Mount {
    pub destination: PathBuf,
    #[serde(default)]
    pub source: Option<PathBuf>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Linux {
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Namespace {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub path: Option<PathBuf>,
}

pub fn load_config(bundle: &Path) -> Result<BundleConfig> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| {
        Error::io(
            format!("bundle config {}", path.display()),
            e,
            "check the bundle path the runtime passed",
        )
    })?;
    serde_json::from_slice(&text).map_err(|e| {
        Error::invalid(
            format!("bundle config {}", path.display()),
            format!("is not valid JSON ({e})"),
            "fix config.json",
        )
    })
}

impl BundleConfig {
    /// The container's rootfs on the host.
    pub fn rootfs(&self, bundle: &Path) -> Option<PathBuf> {
        let p = &self.root.as_ref()?.path;
        Some(if p.is_absolute() {
            p.clone()
        } else {
            bundle.join(p)
        })
    }

    /// `Some(Some(path))`: the container joins that netns; `Some(None)`: a new netns (use the
    /// pid's); `None`: no network namespace, the container shares the host's.
    pub fn netns(&self) -> Option<Option<PathBuf>> {
        let ns = self
            .linux
            .as_ref()?
            .namespaces
            .iter()
            .find(|n| n.kind == "network")?;
        Some(ns.path.clone())
    }

    /// The host file bind-mounted at `dest` in the container, if any (podman does this for
    /// /etc/hosts and /etc/resolv.conf): that is the file the container sees.
    pub fn bind_source(&self, dest: &str) -> Option<PathBuf> {
        self.mounts
            .iter()
            .rev() // the last mount on a path is the one that is visible
            .find(|m| {
                m.destination == Path::new(dest)
                    && (m.kind.as_deref() == Some("bind")
                        || m.options.iter().any(|o| o == "bind" || o == "rbind"))
            })
            .and_then(|m| m.source.clone())
    }
}

/// What the container asks for, from annotations (which win) and hook arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wants {
    pub networks: Vec<NetworkName>,
    /// Static addresses per network.
    pub ips: HashMap<NetworkName, Ipv4Addr>,
    pub mac: Option<Mac>,
    pub aliases: Vec<String>,
    pub publish: Vec<String>,
    pub disabled: bool,
    /// `nethook.mtu`, `nethook.sysctl.*`, `nethook.offload.*`, `nethook.bandwidth.*`: over
    /// each network's own options.
    pub tuning: crate::tuning::Tuning,
    /// True when no network was named (the default network was filled in).
    pub default_network: bool,
}

/// Hook command-line arguments, overridden by annotations.
#[derive(Debug, Clone, Default)]
pub struct HookArgs {
    pub networks: Vec<String>,
    pub publish: Vec<String>,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub aliases: Vec<String>,
}

fn comma_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

/// Validate a DNS name label sequence (hostname or alias).
pub fn check_dns_name(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            format!("{what} {s:?}"),
            "is not a valid DNS name",
            "use letters, digits, '-' and '.'",
        ))
    }
}

/// Merge annotations (state's, then config.json's, which the runtime copies anyway) over args.
pub fn wants(
    args: &HookArgs,
    annotations: &HashMap<String, String>,
    default_net: &str,
) -> Result<Wants> {
    let get = |k: &str| annotations.get(k).map(|s| s.as_str());
    let mut w = Wants {
        disabled: get(ANN_DISABLE)
            .map(|v| v.trim() == "true")
            .unwrap_or(false),
        ..Default::default()
    };
    if w.disabled {
        return Ok(w);
    }
    let nets = match get(ANN_NETWORK) {
        Some(v) => comma_list(v),
        None => args.networks.iter().flat_map(|n| comma_list(n)).collect(),
    };
    w.default_network = nets.is_empty();
    let nets = if nets.is_empty() {
        vec![default_net.to_string()]
    } else {
        nets
    };
    for n in &nets {
        let name = NetworkName::new(n)?;
        if w.networks.contains(&name) {
            return Err(Error::invalid(
                format!("network {n}"),
                "is named twice",
                "name each network once",
            ));
        }
        w.networks.push(name);
    }
    if let Some(ipspec) = get(ANN_IP).map(String::from).or_else(|| args.ip.clone()) {
        for part in comma_list(&ipspec) {
            let (net, ip) = match part.split_once('=') {
                Some((n, ip)) => (NetworkName::new(n)?, ip),
                None => (w.networks[0].clone(), part.as_str()),
            };
            if !w.networks.contains(&net) {
                return Err(Error::invalid(
                    format!("static address {part}"),
                    format!("names network {net}, which the container is not on"),
                    "use NET=IP with one of the container's networks",
                ));
            }
            let ip = crate::config::parse_ipv4("static address", ip)?;
            w.ips.insert(net, ip);
        }
    }
    w.tuning = crate::tuning::Tuning::from_annotations(annotations)?;
    if let Some(m) = get(ANN_MAC).map(String::from).or_else(|| args.mac.clone()) {
        w.mac = Some(Mac::parse(m.trim())?);
    }
    w.aliases = match get(ANN_ALIASES) {
        Some(v) => comma_list(v),
        None => args.aliases.clone(),
    };
    for a in &w.aliases {
        check_dns_name("alias", a)?;
    }
    w.publish = match get(ANN_PUBLISH) {
        Some(v) => comma_list(v),
        None => args.publish.clone(),
    };
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_state() {
        let s = br#"{"ociVersion":"1.0.2-dev","id":"web1","status":"creating","pid":4242,"bundle":"/b","annotations":{"nethook.network":"web"}}"#;
        let st = parse_state(s).unwrap();
        assert_eq!(st.id.as_str(), "web1");
        assert_eq!(st.pid, Some(4242));
        assert_eq!(st.annotations["nethook.network"], "web");
    }

    #[test]
    fn runc_poststop_state_has_no_pid() {
        let s = br#"{"ociVersion":"1.0.2-dev","id":"web1","status":"stopped","bundle":"/b"}"#;
        assert_eq!(parse_state(s).unwrap().pid, None);
    }

    #[test]
    fn crun_state() {
        let s = br#"{"ociVersion":"1.0","id":"c1","pid":0,"root":"rootfs","bundle":"/b","status":"stopped","annotations":{}}"#;
        let st = parse_state(s).unwrap();
        assert_eq!(st.pid, Some(0));
    }

    #[test]
    fn bad_states() {
        for bad in [
            &b""[..],
            b"  \n",
            b"{",
            b"[]",
            b"{\"id\":\"\"}",
            b"{\"id\":\"../x\",\"bundle\":\"/b\"}",
            b"null",
        ] {
            assert!(
                parse_state(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let big = vec![b' '; (MAX_STATE_BYTES + 2) as usize];
        let e = read_state(&big[..]).unwrap_err().to_string();
        assert!(e.contains("1 MiB"), "{e}");
    }

    #[test]
    fn annotations_override_args() {
        let args = HookArgs {
            networks: vec!["a".into()],
            ip: Some("10.0.0.9".into()),
            ..Default::default()
        };
        let mut ann = HashMap::new();
        let w = wants(&args, &ann, "nethook").unwrap();
        assert_eq!(w.networks[0].as_str(), "a");
        ann.insert(ANN_NETWORK.into(), "b, c".into());
        ann.insert(ANN_IP.into(), "c=10.0.1.2".into());
        ann.insert(ANN_MAC.into(), "02:00:00:00:00:01".into());
        let w = wants(&args, &ann, "nethook").unwrap();
        assert_eq!(
            w.networks.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert_eq!(w.ips.len(), 1);
        assert!(w.mac.is_some());
        ann.insert(ANN_IP.into(), "zz=10.0.1.2".into());
        assert!(wants(&args, &ann, "nethook").is_err());
        let w = wants(&HookArgs::default(), &HashMap::new(), "nethook").unwrap();
        assert_eq!(w.networks[0].as_str(), "nethook");
    }

    #[test]
    fn bad_annotations() {
        for (k, v) in [
            (ANN_NETWORK, "a/b"),
            (ANN_NETWORK, "a,a"),
            (ANN_IP, "10.0.0"),
            (ANN_MAC, "xx"),
            (ANN_ALIASES, "bad name"),
        ] {
            let ann = HashMap::from([(k.to_string(), v.to_string())]);
            assert!(
                wants(&HookArgs::default(), &ann, "nethook").is_err(),
                "{k}={v} accepted"
            );
        }
    }

    #[test]
    fn config_parts() {
        let c: BundleConfig = serde_json::from_str(
            r#"{"hostname":"h","root":{"path":"rootfs"},"mounts":[{"destination":"/etc/hosts","source":"/x/hosts","type":"bind","options":["rbind"]}],
                "linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/run/netns/n"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            c.rootfs(Path::new("/b")).unwrap(),
            PathBuf::from("/b/rootfs")
        );
        assert_eq!(c.netns(), Some(Some(PathBuf::from("/run/netns/n"))));
        assert_eq!(c.bind_source("/etc/hosts"), Some(PathBuf::from("/x/hosts")));
        assert_eq!(c.bind_source("/etc/resolv.conf"), None);
    }
}
