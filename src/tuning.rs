//! Per-container tuning (issue 6): MTU, sysctls of the container's network namespace, offloads
//! and bandwidth limits. This module parses and validates what the user asked for (network
//! options from `nethook network create -o K=V`, container annotations `nethook.*`) and writes
//! sysctls; the kernel operations for offloads and qdiscs live in `netlink::ethtool` and
//! `netlink::tc`.

use crate::error::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::str::FromStr;

/// The smallest MTU IPv6 works with (RFC 8200). The caller checks it for IPv6 networks; this
/// module only knows the IPv4 floor.
pub use crate::config::MIN_MTU_IPV6;
/// The smallest MTU the kernel accepts for IPv4 (RFC 791), and the largest an Ethernet-like
/// link takes.
pub const MIN_MTU: u32 = 68;
pub const MAX_MTU: u32 = 65535;
/// The slowest bandwidth limit accepted: below this a single full-size frame takes more than a
/// second, and connections time out instead of being slow.
pub const MIN_RATE_BITS: u64 = 8_000;

const MAX_SYSCTL_NAME: usize = 200;
const MAX_SYSCTL_VALUE: usize = 256;
/// The annotation prefix: `nethook.mtu` is the option `mtu`.
const ANN_PREFIX: &str = "nethook.";

/// A bandwidth, in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate {
    pub bits_per_sec: u64,
}

/// tc's units (tc(8) "RATES"): SI multiples, `bps` meaning bytes per second.
const RATE_UNITS: &[(&str, u128)] = &[
    ("bit", 1),
    ("kbit", 1_000),
    ("mbit", 1_000_000),
    ("gbit", 1_000_000_000),
    ("tbit", 1_000_000_000_000),
    ("bps", 8),
    ("kbps", 8_000),
    ("mbps", 8_000_000),
    ("gbps", 8_000_000_000),
    ("tbps", 8_000_000_000_000),
];

impl Rate {
    pub fn from_bits(bits_per_sec: u64) -> Rate {
        Rate { bits_per_sec }
    }
    /// Bytes per second, rounded down (what the kernel's tbf counts in).
    pub fn bytes_per_sec(self) -> u64 {
        self.bits_per_sec / 8
    }
}

impl FromStr for Rate {
    type Err = Error;
    fn from_str(s: &str) -> Result<Rate> {
        let bad = |why: &str| {
            Error::invalid(
                format!("rate {s:?}"),
                why.to_string(),
                "write it like tc does: 20mbit, 500kbit, 1gbit, 2mbps (bytes/s) or plain bits/s",
            )
        };
        let t = s.trim();
        // Bounded so the digit arithmetic below cannot be made slow or overflow u128 early.
        if t.is_empty() || t.len() > 40 {
            return Err(bad("is empty or too long"));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.to_ascii_lowercase();
        let mult = if unit.is_empty() {
            1
        } else {
            RATE_UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, m)| *m)
                .ok_or_else(|| bad(&format!("has an unknown unit {unit:?}")))?
        };
        let (int, frac) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(bad("is not a number"));
        }
        // Exact decimal arithmetic: 1.5mbit is 1500000 bits, not whatever an f64 makes of it.
        let mut mantissa: u128 = 0;
        for c in int.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(c - b'0')))
                .ok_or_else(|| bad("is too large"))?;
        }
        let scale = 10u128
            .checked_pow(frac.len() as u32)
            .ok_or_else(|| bad("has too many decimals"))?;
        let bits = mantissa
            .checked_mul(mult)
            .ok_or_else(|| bad("is too large"))?
            / scale;
        let bits = u64::try_from(bits).map_err(|_| bad("is too large"))?;
        if bits == 0 {
            return Err(bad("is zero"));
        }
        Ok(Rate { bits_per_sec: bits })
    }
}

impl fmt::Display for Rate {
    /// The largest bit unit that shows the rate exactly, so the text parses back to the same
    /// rate: `20mbit`, `1500kbit`, `123bit`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bits_per_sec;
        for (unit, m) in [
            ("tbit", 1_000_000_000_000u64),
            ("gbit", 1_000_000_000),
            ("mbit", 1_000_000),
            ("kbit", 1_000),
        ] {
            if b != 0 && b.is_multiple_of(m) {
                return write!(f, "{}{unit}", b / m);
            }
        }
        write!(f, "{b}bit")
    }
}

// As text, the way users write it (state files and JSON output stay readable).
impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Rate, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An offload that can be switched with `ethtool -K`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Offload {
    Tso,
    Gso,
    Gro,
    Sg,
    TxChecksum,
    RxChecksum,
}

impl Offload {
    pub const ALL: [Offload; 6] = [
        Offload::Tso,
        Offload::Gso,
        Offload::Gro,
        Offload::Sg,
        Offload::TxChecksum,
        Offload::RxChecksum,
    ];
    /// The short name `ethtool -K` takes.
    pub fn name(self) -> &'static str {
        match self {
            Offload::Tso => "tso",
            Offload::Gso => "gso",
            Offload::Gro => "gro",
            Offload::Sg => "sg",
            Offload::TxChecksum => "tx",
            Offload::RxChecksum => "rx",
        }
    }
    /// The long name `ethtool -k` prints.
    pub fn long_name(self) -> &'static str {
        match self {
            Offload::Tso => "tcp-segmentation-offload",
            Offload::Gso => "generic-segmentation-offload",
            Offload::Gro => "generic-receive-offload",
            Offload::Sg => "scatter-gather",
            Offload::TxChecksum => "tx-checksumming",
            Offload::RxChecksum => "rx-checksumming",
        }
    }
}

impl FromStr for Offload {
    type Err = Error;
    fn from_str(s: &str) -> Result<Offload> {
        let l = s.to_ascii_lowercase();
        Offload::ALL
            .into_iter()
            .find(|o| o.name() == l || o.long_name() == l)
            .ok_or_else(|| {
                Error::invalid(
                    format!("offload {s:?}"),
                    "is not one nethook can switch",
                    "use tso, gso, gro, sg, tx or rx (or their ethtool -k long names)",
                )
            })
    }
}

impl fmt::Display for Offload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Offload {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Offload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Offload, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What to tune on one container's interface. Every field is optional: empty means "leave the
/// kernel's defaults".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tuning {
    pub mtu: Option<u32>,
    /// sysctl name (`net.ipv4.tcp_syncookies`) to value, written inside the container's netns.
    pub sysctls: BTreeMap<String, String>,
    /// Offload to on (true) or off, on the container's interface.
    pub offloads: BTreeMap<Offload, bool>,
    /// Traffic into the container.
    pub ingress: Option<Rate>,
    /// Traffic out of the container.
    pub egress: Option<Rate>,
}

impl Tuning {
    /// From network options (`mtu`, `sysctl.NAME`, `offload.NAME`, `bandwidth.ingress`,
    /// `bandwidth.egress`); other options belong to someone else and are ignored.
    pub fn from_options(opts: &BTreeMap<String, String>) -> Result<Tuning> {
        let mut t = Tuning::default();
        for (k, v) in opts {
            t.apply("network option", k, k, v)?;
        }
        Ok(t)
    }

    /// From container annotations: the same keys behind `nethook.` (`nethook.mtu`,
    /// `nethook.sysctl.net.core.somaxconn`, ...); other annotations are ignored.
    pub fn from_annotations(ann: &HashMap<String, String>) -> Result<Tuning> {
        // Sorted, so that with two faulty annotations the same one is reported every time.
        let sorted: BTreeMap<&String, &String> = ann.iter().collect();
        let mut t = Tuning::default();
        for (k, v) in sorted {
            if let Some(key) = k.strip_prefix(ANN_PREFIX) {
                t.apply("annotation", k, key, v)?;
            }
        }
        Ok(t)
    }

    /// `over` wins key by key (a container's annotation over its network's option).
    pub fn overlay(mut self, over: &Tuning) -> Tuning {
        if over.mtu.is_some() {
            self.mtu = over.mtu;
        }
        self.sysctls
            .extend(over.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.offloads
            .extend(over.offloads.iter().map(|(k, v)| (*k, *v)));
        if over.ingress.is_some() {
            self.ingress = over.ingress;
        }
        if over.egress.is_some() {
            self.egress = over.egress;
        }
        self
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == Tuning::default()
    }

    /// One key: `source` and `full` name it in errors, `key` is it without the prefix.
    fn apply(&mut self, source: &str, full: &str, key: &str, value: &str) -> Result<()> {
        let what = || format!("{source} {full}={value:?}");
        if key == "mtu" {
            self.mtu = Some(parse_mtu(value).map_err(|why| {
                Error::invalid(
                    what(),
                    why,
                    format!(
                        "give an MTU in {MIN_MTU}-{MAX_MTU} ({MIN_MTU_IPV6} or more with IPv6)"
                    ),
                )
            })?);
        } else if let Some(name) = key.strip_prefix("sysctl.") {
            check_sysctl(name, value).map_err(|(why, fix)| Error::invalid(what(), why, fix))?;
            self.sysctls.insert(name.to_string(), value.to_string());
        } else if let Some(name) = key.strip_prefix("offload.") {
            let o: Offload = name.parse().map_err(|_| {
                Error::invalid(
                    what(),
                    format!("{name:?} is not an offload nethook can switch"),
                    "use offload.tso, gso, gro, sg, tx or rx",
                )
            })?;
            let on = match value.to_ascii_lowercase().as_str() {
                "on" => true,
                "off" => false,
                _ => {
                    return Err(Error::invalid(
                        what(),
                        "is neither on nor off",
                        format!("write {full}=on or {full}=off"),
                    ))
                }
            };
            // Short and long names of one offload in the same set must agree.
            if self.offloads.get(&o).is_some_and(|prev| *prev != on) {
                return Err(Error::invalid(
                    what(),
                    format!("offload {o} is set both on and off"),
                    "keep one of the two settings",
                ));
            }
            self.offloads.insert(o, on);
        } else if let Some(dir) = key.strip_prefix("bandwidth.") {
            let slot = match dir {
                "ingress" => &mut self.ingress,
                "egress" => &mut self.egress,
                _ => return Err(Error::invalid(
                    what(),
                    format!("{dir:?} is not a direction"),
                    "use bandwidth.ingress (into the container) or bandwidth.egress (out of it)",
                )),
            };
            let r: Rate = value.parse().map_err(|e: Error| match e {
                Error::Invalid { why, fix, .. } => Error::invalid(what(), why, fix),
                other => other,
            })?;
            if r.bits_per_sec < MIN_RATE_BITS {
                return Err(Error::invalid(
                    what(),
                    format!("{r} is below the minimum of 8kbit"),
                    "give at least 8kbit",
                ));
            }
            *slot = Some(r);
        }
        Ok(())
    }

    /// Check a Tuning that was built in code or read from a file, not parsed here.
    pub fn validate(&self) -> Result<()> {
        if let Some(m) = self.mtu {
            parse_mtu(&m.to_string()).map_err(|why| {
                Error::invalid(
                    format!("mtu {m}"),
                    why,
                    format!("give an MTU in {MIN_MTU}-{MAX_MTU}"),
                )
            })?;
        }
        for (k, v) in &self.sysctls {
            check_sysctl(k, v)
                .map_err(|(why, fix)| Error::invalid(format!("sysctl {k}={v:?}"), why, fix))?;
        }
        for (dir, r) in [("ingress", self.ingress), ("egress", self.egress)] {
            if let Some(r) = r {
                if r.bits_per_sec < MIN_RATE_BITS {
                    return Err(Error::invalid(
                        format!("{dir} bandwidth {r}"),
                        "is below the minimum of 8kbit",
                        "give at least 8kbit",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn parse_mtu(v: &str) -> std::result::Result<u32, String> {
    let m: u32 = v
        .trim()
        .parse()
        .map_err(|_| "is not a whole number".to_string())?;
    if !(MIN_MTU..=MAX_MTU).contains(&m) {
        return Err(format!("{m} is outside {MIN_MTU}-{MAX_MTU}"));
    }
    Ok(m)
}

/// Why a sysctl is refused, and what to do: `Err((why, fix))`.
fn check_sysctl(name: &str, value: &str) -> std::result::Result<(), (String, String)> {
    let fix_name = || "give a sysctl name like net.ipv4.tcp_syncookies".to_string();
    // Only net.* follows the network namespace; anything else (kernel.*, vm.*, fs.*) would be
    // written for the whole host.
    if !name.starts_with("net.") {
        return Err((
            format!("{name} is not under net.: only net.* sysctls are namespaced to the container"),
            "set other sysctls on the host, or through the runtime's linux.sysctl".to_string(),
        ));
    }
    if name.len() > MAX_SYSCTL_NAME {
        return Err((
            format!("the name is longer than {MAX_SYSCTL_NAME} bytes"),
            fix_name(),
        ));
    }
    // The name becomes a path under /proc/sys: no '/', no "..", no empty component.
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err((format!("the name contains {c:?}"), fix_name()));
    }
    if name.split('.').any(str::is_empty) || name.contains("..") {
        return Err(("the name has an empty component".to_string(), fix_name()));
    }
    if value.is_empty() {
        return Err(("the value is empty".to_string(), "give a value".to_string()));
    }
    if value.len() > MAX_SYSCTL_VALUE {
        return Err((
            format!("the value is longer than {MAX_SYSCTL_VALUE} bytes"),
            "give a shorter value".to_string(),
        ));
    }
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err((
            "the value has a control or non-ASCII character".to_string(),
            "give printable ASCII on one line".to_string(),
        ));
    }
    Ok(())
}

/// The /proc/sys path of a checked sysctl name.
fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

/// Write sysctls in the calling thread's current network namespace: /proc/sys/net resolves
/// against the netns of the task that opens the file, so the caller enters the container's
/// netns first (`Netns::run_in`). Stops at the first failure.
pub fn write_sysctls(sysctls: &BTreeMap<String, String>) -> Result<()> {
    for (name, value) in sysctls {
        // Checked again: the map may not come from the parsers above.
        check_sysctl(name, value)
            .map_err(|(why, fix)| Error::invalid(format!("sysctl {name}={value:?}"), why, fix))?;
        let path = sysctl_path(name);
        let what = || format!("sysctl {name}={value:?} ({path})");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::invalid(
                    what(),
                    "does not exist in this kernel's container network namespaces",
                    "check the name (some net.* sysctls exist only in the host namespace)",
                ),
                _ => Error::io(
                    what(),
                    e,
                    "run as root (CAP_NET_ADMIN in the container netns)",
                ),
            })?;
        // One write: procfs parses each write(2) as a whole value.
        f.write_all(value.as_bytes()).map_err(|e| {
            if e.raw_os_error() == Some(libc::EINVAL) {
                Error::invalid(
                    what(),
                    "the kernel refused the value",
                    "give a value this sysctl takes (see the kernel's ip-sysctl documentation)",
                )
            } else {
                Error::io(what(), e, "check the value and the kernel log")
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> u64 {
        s.parse::<Rate>().unwrap().bits_per_sec
    }

    #[test]
    fn rate_units() {
        assert_eq!(rate("1000"), 1000);
        assert_eq!(rate("8bit"), 8);
        assert_eq!(rate("20mbit"), 20_000_000);
        assert_eq!(rate("20Mbit"), 20_000_000);
        assert_eq!(rate("500KBIT"), 500_000);
        assert_eq!(rate("1gbit"), 1_000_000_000);
        assert_eq!(rate("2tbit"), 2_000_000_000_000);
        assert_eq!(rate("1bps"), 8);
        assert_eq!(rate("1kbps"), 8_000);
        assert_eq!(rate("2mbps"), 16_000_000);
        assert_eq!(rate("1gbps"), 8_000_000_000);
        assert_eq!(rate("1.5mbit"), 1_500_000);
        assert_eq!(rate(".5kbit"), 500);
        assert_eq!(rate(" 10mbit "), 10_000_000);
        assert_eq!(rate("18446744073709551615"), u64::MAX);
    }

    #[test]
    fn rate_refused() {
        for bad in [
            "",
            "0",
            "0mbit",
            "0.0001bit",
            "mbit",
            "1.2.3mbit",
            ".",
            "-5mbit",
            "10 mbit",
            "10mbitx",
            "10furlongs",
            "1e6",
            "18446744073709551616",
            "99999999999999999999tbit",
            "99999999999999999999999999999999999999999",
            "١٢mbit",
        ] {
            let e = bad.parse::<Rate>().expect_err(bad);
            let msg = e.to_string();
            assert!(msg.contains("rate"), "{bad}: {msg}");
            assert!(!msg.contains('\n'), "{bad}: {msg}");
        }
    }

    #[test]
    fn rate_display_round_trips() {
        for (bits, text) in [
            (20_000_000, "20mbit"),
            (1_500_000, "1500kbit"),
            (123, "123bit"),
            (8_000, "8kbit"),
            (3_000_000_000_000, "3tbit"),
            (u64::MAX, "18446744073709551615bit"),
        ] {
            let r = Rate::from_bits(bits);
            assert_eq!(r.to_string(), text);
            assert_eq!(text.parse::<Rate>().unwrap(), r);
        }
        let json = serde_json::to_string(&Rate::from_bits(20_000_000)).unwrap();
        assert_eq!(json, "\"20mbit\"");
        assert!(serde_json::from_str::<Rate>("\"0bit\"").is_err());
    }

    #[test]
    fn offload_names() {
        for o in Offload::ALL {
            assert_eq!(o.name().parse::<Offload>().unwrap(), o);
            assert_eq!(o.long_name().parse::<Offload>().unwrap(), o);
        }
        assert_eq!("TSO".parse::<Offload>().unwrap(), Offload::Tso);
        assert_eq!("tx".parse::<Offload>().unwrap(), Offload::TxChecksum);
        assert_eq!(
            "rx-checksumming".parse::<Offload>().unwrap(),
            Offload::RxChecksum
        );
        assert!("lro".parse::<Offload>().is_err());
        assert!("".parse::<Offload>().is_err());
    }

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn from_options_full() {
        let t = Tuning::from_options(&opts(&[
            ("mtu", "1400"),
            ("sysctl.net.ipv4.tcp_syncookies", "0"),
            ("sysctl.net.ipv4.tcp_rmem", "4096 87380 6291456"),
            ("offload.tso", "off"),
            ("offload.generic-receive-offload", "ON"),
            ("bandwidth.ingress", "20mbit"),
            ("bandwidth.egress", "1gbit"),
            ("allow_host_ports", "80"),
            ("unrelated", "whatever\n"),
        ]))
        .unwrap();
        assert_eq!(t.mtu, Some(1400));
        assert_eq!(t.sysctls["net.ipv4.tcp_syncookies"], "0");
        assert_eq!(t.sysctls.len(), 2);
        assert!(!t.offloads[&Offload::Tso]);
        assert!(t.offloads[&Offload::Gro]);
        assert_eq!(t.ingress, Some(Rate::from_bits(20_000_000)));
        assert_eq!(t.egress, Some(Rate::from_bits(1_000_000_000)));
        t.validate().unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Tuning>(&json).unwrap(), t);
        assert!(Tuning::from_options(&BTreeMap::new()).unwrap().is_empty());
    }

    #[test]
    fn from_options_refused() {
        for (k, v, needle) in [
            ("mtu", "67", "68-65535"),
            ("mtu", "65536", "68-65535"),
            ("mtu", "-1", "whole number"),
            ("mtu", "", "whole number"),
            ("sysctl.kernel.core_pattern", "|/tmp/x", "only net.*"),
            ("sysctl.vm.swappiness", "1", "only net.*"),
            ("sysctl.net", "1", "only net.*"),
            ("sysctl.net..ipv4", "1", "empty component"),
            ("sysctl.net.ipv4.", "1", "empty component"),
            ("sysctl.net.ipv4/../../kernel", "1", "contains '/'"),
            ("sysctl.net.ipv4.conf.eth0 x", "1", "contains ' '"),
            ("sysctl.net.core.somaxconn", "", "empty"),
            ("sysctl.net.core.somaxconn", "1\n2", "control"),
            ("sysctl.net.core.somaxconn", "é", "non-ASCII"),
            ("offload.lro", "off", "not an offload"),
            ("offload.tso", "no", "neither on nor off"),
            ("bandwidth.ingress", "7kbit", "minimum"),
            ("bandwidth.ingress", "0", "zero"),
            ("bandwidth.egress", "fast", "unknown unit"),
            ("bandwidth.sideways", "1mbit", "not a direction"),
        ] {
            let e = Tuning::from_options(&opts(&[(k, v)])).expect_err(k);
            let msg = e.to_string();
            assert!(msg.contains(needle), "{k}={v}: {msg}");
            assert!(msg.contains(k), "{k}={v}: {msg}");
            assert!(!msg.contains('\n'), "{k}={v}: {msg}");
        }
        let long = format!("sysctl.net.{}", "a".repeat(200));
        assert!(Tuning::from_options(&opts(&[(&long, "1")])).is_err());
        let long_value = "1".repeat(257);
        assert!(Tuning::from_options(&opts(&[("sysctl.net.x", &long_value)])).is_err());
        let e = Tuning::from_options(&opts(&[
            ("offload.tso", "off"),
            ("offload.tcp-segmentation-offload", "on"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("both on and off"), "{e}");
    }

    #[test]
    fn annotations_and_overlay() {
        let ann: HashMap<String, String> = [
            ("nethook.mtu", "9000"),
            ("nethook.sysctl.net.core.somaxconn", "512"),
            ("nethook.offload.gro", "off"),
            ("nethook.bandwidth.egress", "5mbit"),
            ("nethook.network", "web"),
            ("nethook.ip", "10.88.0.5"),
            ("mtu", "1"),
            ("io.kubernetes.cri.sandbox", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let a = Tuning::from_annotations(&ann).unwrap();
        assert_eq!(a.mtu, Some(9000));
        assert_eq!(a.egress, Some(Rate::from_bits(5_000_000)));
        assert_eq!(a.ingress, None);

        let n = Tuning::from_options(&opts(&[
            ("mtu", "1400"),
            ("sysctl.net.core.somaxconn", "4096"),
            ("sysctl.net.ipv4.tcp_syncookies", "0"),
            ("offload.gro", "on"),
            ("offload.tso", "off"),
            ("bandwidth.ingress", "10mbit"),
            ("bandwidth.egress", "10mbit"),
        ]))
        .unwrap();
        let t = n.overlay(&a);
        assert_eq!(t.mtu, Some(9000));
        assert_eq!(t.sysctls["net.core.somaxconn"], "512");
        assert_eq!(t.sysctls["net.ipv4.tcp_syncookies"], "0");
        assert!(!t.offloads[&Offload::Gro]);
        assert!(!t.offloads[&Offload::Tso]);
        assert_eq!(t.ingress, Some(Rate::from_bits(10_000_000)));
        assert_eq!(t.egress, Some(Rate::from_bits(5_000_000)));

        let bad: HashMap<String, String> =
            [("nethook.sysctl.kernel.panic".to_string(), "1".to_string())].into();
        let e = Tuning::from_annotations(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with("annotation nethook.sysctl.kernel.panic"),
            "{e}"
        );
    }

    #[test]
    fn validate_built_in_code() {
        let t = Tuning {
            mtu: Some(10),
            ..Default::default()
        };
        assert!(t.validate().is_err());
        let t = Tuning {
            egress: Some(Rate::from_bits(0)),
            ..Default::default()
        };
        assert!(t.validate().is_err());
        let mut t = Tuning::default();
        t.sysctls.insert("kernel.core_pattern".into(), "x".into());
        assert!(t.validate().is_err());
        assert!(write_sysctls(&t.sysctls)
            .unwrap_err()
            .to_string()
            .contains("only net.*"));
    }

    #[test]
    fn sysctl_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.conf.all.forwarding"),
            "/proc/sys/net/ipv4/conf/all/forwarding"
        );
    }
}
