//! The CNI protocol's JSON: the network configuration nethook reads on stdin, the results and
//! errors it prints (CNI spec 1.1, with the older shapes 0.3.0-0.4.0 where they differ).

use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::path::PathBuf;

/// Versions nethook speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// What errors and VERSION answer when the caller named no (known) version.
pub const LATEST: &str = "1.1.0";

/// Well-known error codes of the spec, and nethook's own (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const NOT_AVAILABLE: u32 = 50;
    /// The operation failed in nethook (kernel, firewall, addresses): see msg.
    pub const FAILED: u32 = 100;
    /// The container is networked by nethook's OCI hook already.
    pub const HOOK_OWNED: u32 = 101;
    /// CHECK: the kernel does not hold what the record says.
    pub const CHECK_FAILED: u32 = 102;
}

/// A CNI error: printed as the spec's error JSON on stdout, exit 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// A library error, with its one-line message as the details.
    pub fn from_lib(code: u32, msg: &str, e: &crate::error::Error) -> CniError {
        let code = match e {
            crate::error::Error::Io { .. } if code == self::code::FAILED => self::code::IO_FAILURE,
            _ => code,
        };
        CniError::new(code, msg, e.to_string().replace('\n', " "))
    }

    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

pub type CniResult<T> = std::result::Result<T, CniError>;

/// One published port as the `portMappings` capability passes it (portmap's shape).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

impl PortMapping {
    /// The publish spec nethook parses (`[HOST_IP:]HOST_PORT:CONTAINER_PORT/PROTO`).
    pub fn to_spec(&self) -> String {
        let proto = self
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("tcp")
            .to_ascii_lowercase();
        let ports = format!("{}:{}/{proto}", self.host_port, self.container_port);
        match self.host_ip.as_deref().filter(|h| !h.is_empty()) {
            Some(h) if h.contains(':') => format!("[{h}]:{ports}"),
            Some(h) => format!("{h}:{ports}"),
            None => ports,
        }
    }
}

/// `runtimeConfig`: the capabilities nethook honours.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// `ips` (the static plugin's capability): `10.1.2.3/24` or `10.1.2.3`.
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
    /// `aliases`: a list, or a map from network name to list (podman's shape).
    #[serde(default)]
    pub aliases: Option<Value>,
}

/// An attachment in GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The network configuration on stdin (one plugin's entry of a conflist, as the runtime
/// passes it). Fields nethook does not know are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The nethook network to join.
    #[serde(default)]
    pub network: Option<String>,
    /// Inline settings: the network is created with these on first use.
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub ip_range: Option<String>,
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub ip_masq: Option<bool>,
    /// nethook's container DNS on the inline network (default on).
    #[serde(default)]
    pub container_dns: Option<bool>,
    /// nethook's dirs (default: `NETHOOK_CONFIG_DIR` / `NETHOOK_RUN_DIR`, else the defaults).
    #[serde(default)]
    pub config_dir: Option<PathBuf>,
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    #[serde(default)]
    pub runtime_config: Option<RuntimeConfig>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// The conflist's DNS settings: their search domains go into the result.
    #[serde(default)]
    pub dns: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

impl NetConf {
    pub fn parse(input: &[u8]) -> CniResult<NetConf> {
        if input.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(NetConf::default());
        }
        serde_json::from_slice(input).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                "cannot decode the network configuration on stdin",
                e.to_string(),
            )
        })
    }

    /// The version asked for, if nethook speaks it.
    pub fn version(&self) -> CniResult<&str> {
        let v = self.cni_version.as_deref().unwrap_or("0.3.0");
        if SUPPORTED_VERSIONS.contains(&v) {
            Ok(v)
        } else {
            Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("incompatible CNI version {v}"),
                format!("nethook supports {}", SUPPORTED_VERSIONS.join(", ")),
            ))
        }
    }
}

/// `(major, minor, patch)` of a version string (unknown parts 0).
pub fn version_tuple(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// One interface of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub mac: Option<String>,
    pub sandbox: Option<String>,
    pub mtu: Option<u32>,
}

/// One address of a result; `interface` indexes this plugin's own interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConf {
    pub address: String,
    pub gateway: Option<String>,
    pub interface: usize,
    pub v6: bool,
}

/// What this plugin made, before it is merged with a previous result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Made {
    pub interfaces: Vec<Iface>,
    pub ips: Vec<IpConf>,
    /// (dst, gw)
    pub routes: Vec<(String, Option<String>)>,
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
}

/// The result JSON in `version`'s shape, appended to `prev` (a chained plugin's result) when
/// given: interfaces and addresses after the previous ones (indexes shifted), routes added,
/// DNS filled in where the previous result has none.
pub fn result_json(version: &str, made: &Made, prev: Option<&Value>) -> Value {
    let old_shape = version_tuple(version) < (1, 0, 0);
    let mut out = match prev {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    out.insert("cniVersion".into(), Value::String(version.into()));
    let mut ifaces = match out.remove("interfaces") {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let base = ifaces.len();
    for i in &made.interfaces {
        let mut o = json!({"name": i.name});
        if let Some(m) = &i.mac {
            o["mac"] = json!(m);
        }
        if let Some(s) = &i.sandbox {
            o["sandbox"] = json!(s);
        }
        if let (Some(m), false) = (i.mtu, old_shape) {
            o["mtu"] = json!(m);
        }
        ifaces.push(o);
    }
    let mut ips = match out.remove("ips") {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    for ip in &made.ips {
        let mut o = json!({"address": ip.address, "interface": base + ip.interface});
        if let Some(g) = &ip.gateway {
            o["gateway"] = json!(g);
        }
        if old_shape {
            o["version"] = json!(if ip.v6 { "6" } else { "4" });
        }
        ips.push(o);
    }
    let mut routes = match out.remove("routes") {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    for (dst, gw) in &made.routes {
        let mut o = json!({"dst": dst});
        if let Some(g) = gw {
            o["gw"] = json!(g);
        }
        routes.push(o);
    }
    out.insert("interfaces".into(), Value::Array(ifaces));
    out.insert("ips".into(), Value::Array(ips));
    if !routes.is_empty() {
        out.insert("routes".into(), Value::Array(routes));
    }
    let prev_dns_empty = match out.get("dns") {
        Some(Value::Object(d)) => d.is_empty(),
        _ => true,
    };
    if prev_dns_empty && !(made.nameservers.is_empty() && made.search.is_empty()) {
        let mut d = Map::new();
        if !made.nameservers.is_empty() {
            d.insert("nameservers".into(), json!(made.nameservers));
        }
        if !made.search.is_empty() {
            d.insert("search".into(), json!(made.search));
        }
        out.insert("dns".into(), Value::Object(d));
    }
    Value::Object(out)
}

/// `CNI_ARGS`: `K=V;K=V`.
pub fn parse_cni_args(s: &str) -> Vec<(String, String)> {
    s.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made() -> Made {
        Made {
            interfaces: vec![
                Iface {
                    name: "vethx".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    sandbox: None,
                    mtu: None,
                },
                Iface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:02".into()),
                    sandbox: Some("/run/netns/a".into()),
                    mtu: None,
                },
            ],
            ips: vec![IpConf {
                address: "10.1.0.2/24".into(),
                gateway: Some("10.1.0.1".into()),
                interface: 1,
                v6: false,
            }],
            routes: vec![("0.0.0.0/0".into(), Some("10.1.0.1".into()))],
            nameservers: vec!["10.1.0.1".into()],
            search: vec![],
        }
    }

    #[test]
    fn result_shapes_by_version() {
        let r = result_json("1.1.0", &made(), None);
        assert_eq!(r["cniVersion"], "1.1.0");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(r["interfaces"][1]["sandbox"], "/run/netns/a");
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(r["dns"]["nameservers"][0], "10.1.0.1");
        let r = result_json("0.4.0", &made(), None);
        assert_eq!(r["ips"][0]["version"], "4");
    }

    #[test]
    fn prev_result_is_appended_to() {
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "other0"}],
            "ips": [{"address": "192.168.1.2/24", "interface": 0}],
            "dns": {"nameservers": ["1.1.1.1"]},
            "custom": 1
        });
        let r = result_json("1.0.0", &made(), Some(&prev));
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(r["ips"][0]["address"], "192.168.1.2/24");
        assert_eq!(r["ips"][1]["interface"], 2);
        assert_eq!(r["dns"]["nameservers"][0], "1.1.1.1");
        assert_eq!(r["custom"], 1);
    }

    #[test]
    fn netconf_fields_and_versions() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"nethook","network":"web",
            "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
            {"hostPort":53,"containerPort":53,"protocol":"udp","hostIP":"::1"}],
            "ips":["10.1.0.9/24"],"mac":"02:11:22:33:44:55"},
            "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],
            "unknown":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(c.version().unwrap(), "1.1.0");
        let rc = c.runtime_config.unwrap();
        assert_eq!(rc.port_mappings[0].to_spec(), "8080:80/tcp");
        assert_eq!(rc.port_mappings[1].to_spec(), "[::1]:53:53/udp");
        assert_eq!(c.valid_attachments.unwrap()[0].ifname, "eth0");
        let bad = NetConf::parse(br#"{"cniVersion":"9.9.9"}"#).unwrap();
        assert_eq!(bad.version().unwrap_err().code, code::INCOMPATIBLE_VERSION);
        assert_eq!(
            NetConf::parse(b"{nope").unwrap_err().code,
            code::DECODING_FAILURE
        );
    }

    #[test]
    fn cni_args() {
        let a = parse_cni_args("IgnoreUnknown=1;IP=10.1.0.5;K8S_POD_NAME=web-0");
        assert_eq!(a[1], ("IP".into(), "10.1.0.5".into()));
        assert_eq!(a.len(), 3);
    }
}
