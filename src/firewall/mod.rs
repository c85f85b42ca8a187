//! nethook's nftables table and the element updates that attach and detach
//! containers.
//!
//! One table, `inet nethook`, owned by nethook alone. Its rules never change
//! after creation: per-container and per-network state lives in sets, so a
//! container costs one element update in one batch, however many containers
//! exist (the per-container-rule design of other tools is what makes their
//! updates slow).
//!
//! ```text
//! table inet nethook {
//!   set bridges { type ifname; }
//!   set nets4 { type ipv4_addr; flags interval; }
//!   set masq4 { type ipv4_addr; flags timeout; }
//!   chain forward { type filter hook forward priority filter; policy accept;
//!     ct state established,related accept
//!     iifname @bridges accept
//!     oifname @bridges accept
//!   }
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr @masq4 ip daddr != @nets4 masquerade
//!   }
//! }
//! ```
//!
//! Teardown is on the hook's hot path, and deleting is what is slow here: a
//! transaction that deletes anything leaves nf_tables destroy work that waits
//! for an RCU grace period, and closing a netfilter netlink socket (the hook
//! process exiting) waits for that work. Measured on 6.18 in a netns: the
//! delete batch itself ~0.05 ms, the close after it 8-27 ms; an add ~0.05 ms
//! with a 0.01 ms close. So a container's masquerade element is not deleted:
//! it is re-added with `timeout 1s expires 1ms` and the kernel reaps it (its
//! garbage collector frees elements without that wait). Re-adding the key
//! without a timeout makes it permanent again, also before the reaper ran.
//! Kernels before 6.12 silently ignore a timeout update of an existing
//! element; there the expiry falls back to a real delete.

use std::ffi::CStr;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::netlink::nft::{
    ct_state, datatype, priority, set_flags, set_userdata, Batch, ByteOrder, Chain, ChainType,
    CmpOp, CtKey, Element, Expr, Family, Hook, MetaKey, Mode, NftError, NftSocket, PayloadBase,
    Policy, Register, Rule, SetDef, SetRef, Table,
};

pub const TABLE: &str = "nethook"; // family inet
pub const FAMILY: Family = Family::Inet;
pub const SET_BRIDGES: &str = "bridges";
pub const SET_NETS4: &str = "nets4";
pub const SET_MASQ4: &str = "masq4";
pub const CHAIN_FORWARD: &str = "forward";
pub const CHAIN_POSTROUTING: &str = "postrouting";

/// `timeout 1s expires 1ms`: what ExpireMasq4 gives an element. The kernel
/// rounds 1 ms up to one jiffy, so the element is gone from lookups at once.
const EXPIRE_TIMEOUT_MS: u64 = 1000;
const EXPIRE_EXPIRATION_MS: u64 = 1;
/// IFNAMSIZ: set keys for interface names are 16 bytes, NUL padded.
const IFNAMSIZ: usize = 16;
/// First kernel whose NEWSETELEM updates the timeout of an existing element
/// (before, a re-add of an existing key was silently ignored).
const TIMEOUT_UPDATE_KERNEL: (u32, u32) = (6, 12);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Bridge ifname into set `bridges`.
    AddBridge(String),
    /// Real delete (rare path: network rm).
    RemoveBridge(String),
    /// A nethook subnet into interval set `nets4`.
    AddNet4(Ipv4Net),
    /// Real delete (network rm).
    RemoveNet4(Ipv4Net),
    /// A container address that masquerades, into `masq4` (permanent).
    AddMasq4(Ipv4Addr),
    /// Teardown without a delete: the element gets `timeout 1s expires 1ms`.
    ExpireMasq4(Ipv4Addr),
}

#[derive(thiserror::Error, Debug)]
pub enum FirewallError {
    #[error(transparent)]
    Nft(#[from] NftError),

    #[error(
        "nftables: bridge name {name:?} {reason}; use an interface name of 1 to 15 bytes without '/', ':' or spaces"
    )]
    BridgeName { name: String, reason: &'static str },
}

impl FirewallError {
    /// The kernel's errno, when the kernel refused the change.
    pub fn errno(&self) -> Option<i32> {
        match self {
            FirewallError::Nft(e) => e.errno(),
            FirewallError::BridgeName { .. } => None,
        }
    }
}

/// How ExpireMasq4 takes an element out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireMode {
    /// Update the element to `timeout 1s expires 1ms` (no delete, no RCU wait).
    Timeout,
    /// Kernels without element timeout updates: add-then-delete in one batch
    /// (the add makes the delete succeed when the element is already gone),
    /// paying the deletion's grace period when the socket closes.
    Delete,
}

/// What the kernel's nethook sets hold now (expired elements left out).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub bridges: Vec<String>,
    pub nets4: Vec<Ipv4Net>,
    pub masq4: Vec<Ipv4Addr>,
}

pub struct Firewall {
    sock: NftSocket,
    expire: ExpireMode,
}

fn set_ref(name: &str) -> SetRef {
    SetRef::named(FAMILY, TABLE, name)
}

/// major.minor of a kernel release string ("6.18.44-fc-v1272" -> (6, 18)).
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel_release() -> Option<String> {
    // SAFETY: uname fills the zeroed struct; release is NUL terminated.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    Some(release.to_string_lossy().into_owned())
}

/// The expiry this kernel supports. An unknown version gets the delete: slow
/// but right, where a timeout update that is silently ignored would leave the
/// container's masquerade in place.
fn detect_expire_mode() -> ExpireMode {
    match kernel_release().as_deref().and_then(parse_release) {
        Some(v) if v >= TIMEOUT_UPDATE_KERNEL => ExpireMode::Timeout,
        _ => ExpireMode::Delete,
    }
}

fn bridge_key(name: &str) -> Result<Vec<u8>, FirewallError> {
    let bad = |reason| {
        Err(FirewallError::BridgeName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() >= IFNAMSIZ {
        return bad("is longer than 15 bytes");
    }
    if name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        return bad("is not a valid interface name");
    }
    let mut key = name.as_bytes().to_vec();
    key.resize(IFNAMSIZ, 0);
    Ok(key)
}

/// An interval-set range for a prefix: the start key, and the first address
/// after the prefix flagged as interval end. A prefix reaching
/// 255.255.255.255 has no end element (the range runs to the top), as nft
/// encodes it. nft also puts an interval-end element at 0.0.0.0 into an empty
/// set; the kernel's rbtree does not need it and it would never be removed,
/// so nethook leaves it out (`nft list` shows the prefix either way).
fn net4_elements(net: &Ipv4Net) -> Vec<Element> {
    let net = net.trunc();
    let start = u32::from(net.network());
    let end = u64::from(u32::from(net.broadcast())) + 1;
    let mut elems = vec![Element::new(start.to_be_bytes().to_vec())];
    if let Ok(end) = u32::try_from(end) {
        elems.push(Element::new(end.to_be_bytes().to_vec()).interval_end());
    }
    elems
}

/// Rebuilds prefixes from a dump of an interval set (start and end elements
/// in any order). Ranges that are not a prefix are not nethook's; skip them.
fn nets_from_elements(elems: &[Element]) -> Vec<Ipv4Net> {
    let mut points: Vec<(u32, bool)> = elems
        .iter()
        .filter_map(|e| {
            Some((
                u32::from_be_bytes(e.key.as_slice().try_into().ok()?),
                e.interval_end,
            ))
        })
        .collect();
    // An end and the next range's start can share a key (adjacent ranges):
    // the end comes first.
    points.sort_by_key(|&(key, is_end)| (key, !is_end));
    let mut out = Vec::new();
    for (i, &(start, is_end)) in points.iter().enumerate() {
        if is_end {
            continue;
        }
        let end: u64 = match points.get(i + 1) {
            Some(&(end, true)) => end as u64,
            Some(_) => continue,
            None => 1 << 32,
        };
        let size = end - start as u64;
        if size.is_power_of_two() && (start as u64).is_multiple_of(size) {
            let len = 32 - size.trailing_zeros() as u8;
            if let Ok(net) = Ipv4Net::new(Ipv4Addr::from(start), len) {
                out.push(net);
            }
        }
    }
    out
}

fn ipv4_key(ip: Ipv4Addr) -> Vec<u8> {
    ip.octets().to_vec()
}

/// The whole table as one batch, in nft's order (table, chains, sets, rules),
/// so it can be compared message by message with `nft --debug=mnl -f`.
pub(crate) fn base_batch() -> Result<Batch, NftError> {
    let mut b = Batch::new();
    b.add_table(&Table::new(FAMILY, TABLE), Mode::Create)?;
    b.add_chain(
        &Chain::base(
            FAMILY,
            TABLE,
            CHAIN_FORWARD,
            ChainType::Filter,
            Hook::Forward,
            priority::FILTER,
            Policy::Accept,
        ),
        Mode::Create,
    )?;
    b.add_chain(
        &Chain::base(
            FAMILY,
            TABLE,
            CHAIN_POSTROUTING,
            ChainType::Nat,
            Hook::Postrouting,
            priority::SRCNAT,
            Policy::Accept,
        ),
        Mode::Create,
    )?;
    // ifname keys are compared as host-order strings; addresses big endian.
    // The userdata only tells nft how to print them.
    let bridges = b.add_set(
        &SetDef::new(
            FAMILY,
            TABLE,
            SET_BRIDGES,
            datatype::IFNAME,
            IFNAMSIZ as u32,
        )
        .userdata(set_userdata(ByteOrder::Host, None)),
        Mode::Create,
    )?;
    let nets4 = b.add_set(
        &SetDef::new(FAMILY, TABLE, SET_NETS4, datatype::IPV4_ADDR, 4)
            .flags(set_flags::INTERVAL)
            .userdata(set_userdata(ByteOrder::Big, None)),
        Mode::Create,
    )?;
    let masq4 = b.add_set(
        &SetDef::new(FAMILY, TABLE, SET_MASQ4, datatype::IPV4_ADDR, 4)
            .flags(set_flags::TIMEOUT)
            .userdata(set_userdata(ByteOrder::Big, None)),
        Mode::Create,
    )?;

    let r1 = Register::Reg1;
    // ct state established,related accept
    let ct_mask = ct_state::ESTABLISHED | ct_state::RELATED;
    b.add_rule(&Rule::new(
        FAMILY,
        TABLE,
        CHAIN_FORWARD,
        vec![
            Expr::Ct {
                key: CtKey::State,
                dreg: r1,
            },
            // ct state is a host-order bitmask in the register.
            Expr::Bitwise {
                sreg: r1,
                dreg: r1,
                len: 4,
                mask: ct_mask.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            Expr::Cmp {
                sreg: r1,
                op: CmpOp::NotEqual,
                data: vec![0; 4],
            },
            Expr::accept(),
        ],
    ))?;
    // iifname @bridges accept / oifname @bridges accept
    for key in [MetaKey::Iifname, MetaKey::Oifname] {
        b.add_rule(&Rule::new(
            FAMILY,
            TABLE,
            CHAIN_FORWARD,
            vec![
                Expr::Meta { key, dreg: r1 },
                Expr::lookup(&bridges, r1),
                Expr::accept(),
            ],
        ))?;
    }
    // ip saddr @masq4 ip daddr != @nets4 masquerade
    b.add_rule(&Rule::new(
        FAMILY,
        TABLE,
        CHAIN_POSTROUTING,
        vec![
            // inet table: match IPv4 first (NFPROTO_IPV4 = 2).
            Expr::Meta {
                key: MetaKey::Nfproto,
                dreg: r1,
            },
            Expr::Cmp {
                sreg: r1,
                op: CmpOp::Equal,
                data: vec![2],
            },
            Expr::Payload {
                base: PayloadBase::Network,
                offset: 12,
                len: 4,
                dreg: r1,
            },
            Expr::lookup(&masq4, r1),
            Expr::Payload {
                base: PayloadBase::Network,
                offset: 16,
                len: 4,
                dreg: r1,
            },
            Expr::lookup_not(&nets4, r1),
            Expr::masq(),
        ],
    ))?;
    Ok(b)
}

/// Appends one change to the batch, as one message (two for the delete
/// fallback), each with a description that names the change in errors.
fn push_change(expire: ExpireMode, b: &mut Batch, change: &Change) -> Result<(), FirewallError> {
    match change {
        Change::AddBridge(name) => {
            let key = bridge_key(name)?;
            b.add_elements(
                &set_ref(SET_BRIDGES),
                &[Element::new(key)],
                Mode::Ensure,
                &format!("adding bridge {name} to set {SET_BRIDGES}"),
            )?;
        }
        Change::RemoveBridge(name) => {
            let key = bridge_key(name)?;
            b.delete_elements(
                &set_ref(SET_BRIDGES),
                &[Element::new(key)],
                &format!("removing bridge {name} from set {SET_BRIDGES}"),
            )?;
        }
        Change::AddNet4(net) => {
            b.add_elements(
                &set_ref(SET_NETS4),
                &net4_elements(net),
                Mode::Ensure,
                &format!("adding subnet {} to set {SET_NETS4}", net.trunc()),
            )?;
        }
        Change::RemoveNet4(net) => {
            b.delete_elements(
                &set_ref(SET_NETS4),
                &net4_elements(net),
                &format!("removing subnet {} from set {SET_NETS4}", net.trunc()),
            )?;
        }
        Change::AddMasq4(ip) => {
            // No NLM_F_EXCL and no timeout: adds the element, or makes an
            // expiring one (ExpireMasq4 not yet reaped) permanent again.
            b.add_elements(
                &set_ref(SET_MASQ4),
                &[Element::new(ipv4_key(*ip))],
                Mode::Ensure,
                &format!("adding element {ip} to set {SET_MASQ4}"),
            )?;
        }
        Change::ExpireMasq4(ip) => match expire {
            ExpireMode::Timeout => {
                // Also harmless when the element is gone already: it is
                // re-created expiring and vanishes again.
                b.add_elements(
                    &set_ref(SET_MASQ4),
                    &[Element::new(ipv4_key(*ip))
                        .timeout_ms(EXPIRE_TIMEOUT_MS)
                        .expiration_ms(EXPIRE_EXPIRATION_MS)],
                    Mode::Ensure,
                    &format!("expiring element {ip} in set {SET_MASQ4}"),
                )?;
            }
            ExpireMode::Delete => {
                let what = format!("removing element {ip} from set {SET_MASQ4}");
                let elem = [Element::new(ipv4_key(*ip))];
                b.add_elements(&set_ref(SET_MASQ4), &elem, Mode::Ensure, &what)?;
                b.delete_elements(&set_ref(SET_MASQ4), &elem, &what)?;
            }
        },
    }
    Ok(())
}

impl Firewall {
    /// Opens nf_tables in the current network namespace.
    pub fn open() -> Result<Self, FirewallError> {
        Ok(Firewall {
            sock: NftSocket::open()?,
            expire: detect_expire_mode(),
        })
    }

    /// How ExpireMasq4 works on this kernel (for `doctor`).
    pub fn expire_mode(&self) -> ExpireMode {
        self.expire
    }

    /// Overrides the detected expiry (tests; kernels with backported timeout
    /// updates).
    pub fn set_expire_mode(&mut self, mode: ExpireMode) {
        self.expire = mode;
    }

    /// Whether the nethook table exists (one GETTABLE).
    pub fn table_exists(&mut self) -> Result<bool, FirewallError> {
        Ok(self.sock.table_exists(FAMILY, TABLE)?)
    }

    /// Creates the whole table if it is absent (true: it created it). If the
    /// table exists this is one GETTABLE and nothing else; its content is not
    /// checked (`restore` re-creates it).
    pub fn ensure_base(&mut self) -> Result<bool, FirewallError> {
        if self.sock.table_exists(FAMILY, TABLE)? {
            return Ok(false);
        }
        match self.sock.send(&base_batch()?) {
            Ok(()) => Ok(true),
            // The table is created with NLM_F_EXCL: if another process made it
            // between our lookup and our batch, ours changed nothing.
            Err(e) if e.errno() == Some(libc::EEXIST) && e.failed_index() == Some(0) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies the changes as ONE atomic batch: all or nothing. Empty: no-op.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), FirewallError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new();
        for change in changes {
            push_change(self.expire, &mut batch, change)?;
        }
        self.sock.send(&batch)?;
        Ok(())
    }

    /// Deletes the table with everything in it; Ok if it is not there.
    pub fn remove_table(&mut self) -> Result<(), FirewallError> {
        let mut batch = Batch::new();
        batch.delete_table(FAMILY, TABLE)?;
        match self.sock.send(&batch) {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            other => Ok(other?),
        }
    }

    /// The sets' live content (for `check`); None if the table is absent.
    /// Masquerade elements on their way out (with a timeout) are left out.
    pub fn snapshot(&mut self) -> Result<Option<Snapshot>, FirewallError> {
        let list = |sock: &mut NftSocket, name: &str| -> Result<Option<Vec<Element>>, NftError> {
            match sock.list_elements(&set_ref(name)) {
                Ok(e) => Ok(Some(e)),
                Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let (Some(bridges), Some(nets4), Some(masq4)) = (
            list(&mut self.sock, SET_BRIDGES)?,
            list(&mut self.sock, SET_NETS4)?,
            list(&mut self.sock, SET_MASQ4)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            bridges: bridges
                .iter()
                .map(|e| {
                    let name = e.key.split(|b| *b == 0).next().unwrap_or_default();
                    String::from_utf8_lossy(name).into_owned()
                })
                .collect(),
            nets4: nets_from_elements(&nets4),
            masq4: masq4
                .iter()
                .filter(|e| e.timeout_ms.is_none_or(|t| t == 0))
                .filter_map(|e| Some(Ipv4Addr::from(<[u8; 4]>::try_from(e.key.as_slice()).ok()?)))
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::nft::testns::{in_netns, payloads, skip, Ns};
    use serde_json::{json, Value};
    use std::time::{Duration, Instant};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// The table of the module docs, as nft reads it.
    const BASE_NFT: &str = "table inet nethook {
  set bridges { type ifname; }
  set nets4 { type ipv4_addr; flags interval; }
  set masq4 { type ipv4_addr; flags timeout; }
  chain forward { type filter hook forward priority filter; policy accept;
    ct state established,related accept
    iifname @bridges accept
    oifname @bridges accept
  }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    ip saddr @masq4 ip daddr != @nets4 masquerade
  }
}
";

    /// `nft --debug=mnl -f` of BASE_NFT (nft 1.0.6): the payload (nfgenmsg and
    /// attributes) of each message between BATCH_BEGIN and BATCH_END,
    /// converted with /tmp/nftdev/mnl2hex.py.
    const GOLDEN_BASE: [&str; 10] = [
        // table inet nethook
        "010000000c0001006e6574686f6f6b000800020000000000",
        // chain forward
        "010000000c0001006e6574686f6f6b000c000300666f7277617264000b00070066696c746572000008000500000000011400048008000100000000020800020000000000",
        // chain postrouting
        "010000000c0001006e6574686f6f6b0010000300706f7374726f7574696e6700080007006e61740008000500000000011400048008000100000000040800020000000064",
        // set bridges
        "010000000c0001006e6574686f6f6b000c000200627269646765730008000300000000000800040000000029080005000000001008000a00000000010a000d000004010000000000",
        // set nets4
        "010000000c0001006e6574686f6f6b000a0002006e6574733400000008000300000000040800040000000007080005000000000408000a00000000020a000d000004020000000000",
        // set masq4
        "010000000c0001006e6574686f6f6b000a0002006d6173713400000008000300000000100800040000000007080005000000000408000a00000000030a000d000004020000000000",
        // ct state established,related accept
        "010000000c0001006e6574686f6f6b000c000200666f727761726400c40004802000018007000100637400001400028008000200000000000800010000000001440001800c0001006269747769736500340002800800010000000001080002000000000108000300000000040c00048008000100060000000c00058008000100000000002c00018008000100636d700020000280080001000000000108000200000000010c0003800800010000000000300001800e000100696d6d6564696174650000001c0002800800010000000000100002800c0002800800010000000001",
        // iifname @bridges accept
        "010000000c0001006e6574686f6f6b000c000200666f7277617264008800048024000180090001006d657461000000001400028008000200000000060800010000000001300001800b0001006c6f6f6b757000002000028008000200000000010c00010062726964676573000800040000000001300001800e000100696d6d6564696174650000001c0002800800010000000000100002800c0002800800010000000001",
        // oifname @bridges accept
        "010000000c0001006e6574686f6f6b000c000200666f7277617264008800048024000180090001006d657461000000001400028008000200000000070800010000000001300001800b0001006c6f6f6b757000002000028008000200000000010c00010062726964676573000800040000000001300001800e000100696d6d6564696174650000001c0002800800010000000000100002800c0002800800010000000001",
        // ip saddr @masq4 ip daddr != @nets4 masquerade
        "010000000c0001006e6574686f6f6b0010000200706f7374726f7574696e67003801048024000180090001006d6574610000000014000280080002000000000f08000100000000012c00018008000100636d700020000280080001000000000108000200000000000c0003800500010002000000340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000000c0800040000000004300001800b0001006c6f6f6b757000002000028008000200000000010a0001006d617371340000000800040000000003340001800c0001007061796c6f616400240002800800010000000001080002000000000108000300000000100800040000000004380001800b0001006c6f6f6b757000002800028008000200000000010a0001006e657473340000000800040000000002080005000000000114000180090001006d6173710000000004000280",
    ];

    #[test]
    fn base_table_bytes_match_nft() {
        let p = payloads(&base_batch().unwrap());
        assert_eq!(p.len(), GOLDEN_BASE.len());
        for (i, golden) in GOLDEN_BASE.iter().enumerate() {
            assert_eq!(p[i], hex(golden), "message {i} differs from nft's");
        }
    }

    fn change_payloads(expire: ExpireMode, change: Change) -> Vec<Vec<u8>> {
        let mut b = Batch::new();
        push_change(expire, &mut b, &change).unwrap();
        payloads(&b)
    }

    #[test]
    fn element_bytes_match_nft() {
        // From `nft --debug=mnl add element inet nethook SET { ... }`, minus
        // the NFTA_SET_ELEM_LIST_SET_ID nft adds from its cache (the kernel
        // finds an existing set by name).
        let masq4 = "010000000c0001006e6574686f6f6b000a0002006d61737134000000";
        // { 10.89.0.5 timeout 1s expires 1ms }
        assert_eq!(
            change_payloads(ExpireMode::Timeout, Change::ExpireMasq4(ip("10.89.0.5"))),
            vec![hex(&format!(
                "{masq4}2c000380280001800c00040000000000000003e80c00050000000000000000010c000180080001000a590005"
            ))]
        );
        // { 10.89.0.5 }
        assert_eq!(
            change_payloads(ExpireMode::Timeout, Change::AddMasq4(ip("10.89.0.5"))),
            vec![hex(&format!(
                "{masq4}14000380100001800c000180080001000a590005"
            ))]
        );
        // bridges { "nethook0" }; delete uses the same elements.
        let bridges = "010000000c0001006e6574686f6f6b000c0002006272696467657300";
        let elems = "200003801c00018018000180140001006e6574686f6f6b300000000000000000";
        let add = change_payloads(ExpireMode::Timeout, Change::AddBridge("nethook0".into()));
        assert_eq!(add, vec![hex(&format!("{bridges}{elems}"))]);
        let del = change_payloads(ExpireMode::Timeout, Change::RemoveBridge("nethook0".into()));
        assert_eq!(del, add);
        // nets4 { 10.89.0.0/16 }: start 10.89.0.0, end 10.90.0.0 flagged
        // NFT_SET_ELEM_INTERVAL_END. nft numbers the list nests 1, 2, 3 (the
        // kernel ignores the nest type) and, for an empty set, adds an end
        // element at 0.0.0.0; ours use NFTA_LIST_ELEM and no zero element.
        let nets4 = "010000000c0001006e6574686f6f6b000a0002006e65747334000000";
        assert_eq!(
            change_payloads(ExpireMode::Timeout, Change::AddNet4(net("10.89.0.0/16"))),
            vec![hex(&format!(
                "{nets4}2c000380100001800c000180080001000a590000180001800800030000000001 0c000180080001000a5a0000"
            ).replace(' ', ""))]
        );
    }

    #[test]
    fn intervals() {
        let e = net4_elements(&net("10.89.3.7/16"));
        assert_eq!(
            e,
            vec![
                Element::new(vec![10, 89, 0, 0]),
                Element::new(vec![10, 90, 0, 0]).interval_end()
            ]
        );
        // The top of the address space has no end element.
        assert_eq!(
            net4_elements(&net("255.255.255.0/24")),
            vec![Element::new(vec![255, 255, 255, 0])]
        );
        assert_eq!(
            net4_elements(&net("0.0.0.0/0")),
            vec![Element::new(vec![0, 0, 0, 0])]
        );
        // Back from a dump (the kernel's rbtree returns them in reverse
        // order), ignoring nft's lone end element at 0.0.0.0.
        let mut dump = vec![Element::new(vec![0, 0, 0, 0]).interval_end()];
        // 10.89.0.0/16 ends where 10.90.0.0/24 starts.
        for n in [
            "10.89.0.0/16",
            "10.90.0.0/24",
            "192.168.1.1/32",
            "240.0.0.0/4",
        ] {
            dump.extend(net4_elements(&net(n)));
        }
        dump.reverse();
        assert_eq!(
            nets_from_elements(&dump),
            vec![
                net("10.89.0.0/16"),
                net("10.90.0.0/24"),
                net("192.168.1.1/32"),
                net("240.0.0.0/4")
            ]
        );
    }

    #[test]
    fn bridge_names_are_checked() {
        for bad in [
            "",
            "a-name-of-16-byt",
            "a/b",
            "a b",
            "a:b",
            "a\0b",
            "..",
            ".",
        ] {
            let e = bridge_key(bad).unwrap_err();
            assert!(e.to_string().starts_with("nftables: bridge name"), "{e}");
        }
        assert_eq!(bridge_key("nethook0").unwrap().len(), 16);
        assert!(bridge_key("fifteen-bytes-x").is_ok());
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_release("6.18.44-fc-v1272"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("garbage"), None);
        assert!(Some((6, 18)) >= Some(TIMEOUT_UPDATE_KERNEL));
        assert!((6, 11) < TIMEOUT_UPDATE_KERNEL);
    }

    // ---- root tests: each in its own network namespace ----

    fn listing(ns: &Ns) -> Value {
        ns.nft_json(&["list", "table", "inet", "nethook"])
    }

    /// The listing without nft's metainfo and the kernel's handles.
    fn normalized(mut v: Value) -> Vec<Value> {
        fn strip(v: &mut Value) {
            match v {
                Value::Object(m) => {
                    m.remove("handle");
                    m.values_mut().for_each(strip);
                }
                Value::Array(a) => a.iter_mut().for_each(strip),
                _ => {}
            }
        }
        strip(&mut v);
        v["nftables"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|o| o.get("metainfo").is_none())
            .collect()
    }

    fn elems(ns: &Ns, set: &str) -> Vec<Value> {
        let v = ns.nft_json(&["list", "set", "inet", "nethook", set]);
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|o| o.get("set"))
            .and_then(|s| s.get("elem"))
            .and_then(|e| e.as_array().cloned())
            .unwrap_or_default()
    }

    fn base(ns: &Ns) -> Firewall {
        let _ = ns;
        let mut fw = Firewall::open().unwrap();
        assert!(fw.ensure_base().unwrap());
        fw
    }

    #[test]
    fn ensure_base_creates_exactly_the_table_once() {
        if skip("ensure_base_creates_exactly_the_table_once") {
            return;
        }
        in_netns(|ns| {
            let mut fw = Firewall::open().unwrap();
            assert!(fw.ensure_base().unwrap(), "first call creates the table");
            let first = ns.nft(&["-j", "list", "ruleset"]);
            assert!(!fw.ensure_base().unwrap(), "second call finds it");
            // Nothing changed, not even a handle.
            assert_eq!(ns.nft(&["-j", "list", "ruleset"]), first);

            // Exactly what nft makes of the documented ruleset.
            let ours = normalized(listing(ns));
            fw.remove_table().unwrap();
            ns.nft_stdin(BASE_NFT);
            let theirs = normalized(listing(ns));
            assert_eq!(ours, theirs);
            assert_eq!(ours.len(), 1 + 3 + 2 + 4, "{ours:#?}");
            // And only this table exists.
            let all = normalized(ns.nft_json(&["list", "ruleset"]));
            assert_eq!(all.iter().filter(|o| o.get("table").is_some()).count(), 1);
        });
    }

    #[test]
    fn changes_appear_and_real_removes_remove() {
        if skip("changes_appear_and_real_removes_remove") {
            return;
        }
        in_netns(|ns| {
            let mut fw = base(ns);
            fw.apply(&[]).unwrap();
            fw.apply(&[
                Change::AddBridge("nethook0".into()),
                Change::AddNet4(net("10.89.0.0/16")),
                Change::AddMasq4(ip("10.89.0.5")),
            ])
            .unwrap();
            assert_eq!(elems(ns, SET_BRIDGES), vec![json!("nethook0")]);
            assert_eq!(
                elems(ns, SET_NETS4),
                vec![json!({"prefix": {"addr": "10.89.0.0", "len": 16}})]
            );
            assert_eq!(elems(ns, SET_MASQ4), vec![json!("10.89.0.5")]);
            let text = ns.nft(&["list", "set", "inet", "nethook", SET_NETS4]);
            assert!(text.contains("elements = { 10.89.0.0/16 }"), "{text}");

            // Adds are idempotent (restore re-applies everything).
            fw.apply(&[
                Change::AddBridge("nethook0".into()),
                Change::AddNet4(net("10.89.0.0/16")),
                Change::AddMasq4(ip("10.89.0.5")),
                Change::AddNet4(net("10.90.0.0/24")),
                Change::AddBridge("nethook1".into()),
            ])
            .unwrap();
            let snap = fw.snapshot().unwrap().unwrap();
            assert_eq!(snap.masq4, vec![ip("10.89.0.5")]);
            let mut bridges = snap.bridges.clone();
            bridges.sort();
            assert_eq!(
                bridges,
                vec!["nethook0".to_string(), "nethook1".to_string()]
            );
            let mut nets = snap.nets4.clone();
            nets.sort();
            assert_eq!(nets, vec![net("10.89.0.0/16"), net("10.90.0.0/24")]);

            // An overlapping subnet is refused.
            let err = fw
                .apply(&[Change::AddNet4(net("10.89.128.0/17"))])
                .unwrap_err();
            eprintln!("overlapping subnet: {err}");
            assert!(err
                .to_string()
                .starts_with("nftables: adding subnet 10.89.128.0/17 to set nets4 failed"));

            fw.apply(&[
                Change::RemoveNet4(net("10.89.0.0/16")),
                Change::RemoveBridge("nethook0".into()),
            ])
            .unwrap();
            assert_eq!(elems(ns, SET_BRIDGES), vec![json!("nethook1")]);
            assert_eq!(
                elems(ns, SET_NETS4),
                vec![json!({"prefix": {"addr": "10.90.0.0", "len": 24}})]
            );
            fw.apply(&[
                Change::RemoveNet4(net("10.90.0.0/24")),
                Change::RemoveBridge("nethook1".into()),
            ])
            .unwrap();
            assert!(elems(ns, SET_BRIDGES).is_empty());
            assert!(elems(ns, SET_NETS4).is_empty());
            assert_eq!(elems(ns, SET_MASQ4), vec![json!("10.89.0.5")]);

            // A prefix at the top of the address space has no end element.
            fw.apply(&[Change::AddNet4(net("240.0.0.0/4"))]).unwrap();
            assert_eq!(
                elems(ns, SET_NETS4),
                vec![json!({"prefix": {"addr": "240.0.0.0", "len": 4}})]
            );
            assert_eq!(
                fw.snapshot().unwrap().unwrap().nets4,
                vec![net("240.0.0.0/4")]
            );
            fw.apply(&[Change::RemoveNet4(net("240.0.0.0/4"))]).unwrap();
            assert!(elems(ns, SET_NETS4).is_empty());
        });
    }

    #[test]
    fn expire_makes_the_element_disappear() {
        if skip("expire_makes_the_element_disappear") {
            return;
        }
        in_netns(|ns| {
            let mut fw = base(ns);
            assert_eq!(
                fw.expire_mode(),
                ExpireMode::Timeout,
                "kernel {:?}",
                kernel_release()
            );
            fw.apply(&[
                Change::AddMasq4(ip("10.89.0.5")),
                Change::AddMasq4(ip("10.89.0.6")),
            ])
            .unwrap();
            fw.apply(&[Change::ExpireMasq4(ip("10.89.0.5"))]).unwrap();
            let took = wait_empty_of(ns, "10.89.0.5", Duration::from_secs(2));
            eprintln!("expired element gone from `nft list` after {took:?}");
            assert!(took.is_some(), "10.89.0.5 still listed after 2 s");
            assert_eq!(elems(ns, SET_MASQ4), vec![json!("10.89.0.6")]);
            // Expiring an element that is not there is harmless.
            fw.apply(&[
                Change::ExpireMasq4(ip("10.89.0.5")),
                Change::ExpireMasq4(ip("10.89.0.77")),
            ])
            .unwrap();
            assert_eq!(fw.snapshot().unwrap().unwrap().masq4, vec![ip("10.89.0.6")]);
        });
    }

    fn wait_empty_of(ns: &Ns, addr: &str, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if !elems(ns, SET_MASQ4).iter().any(|e| e == &json!(addr)) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    #[test]
    fn readd_after_expire_is_permanent() {
        if skip("readd_after_expire_is_permanent") {
            return;
        }
        in_netns(|ns| {
            let mut fw = base(ns);
            let a = ip("10.89.0.5");
            // (1) expire and re-add at once, before the element even expired;
            // (2) re-add after it expired but (gc runs every second) before
            // the kernel reaped it; (3) re-add after it is gone for good.
            fw.apply(&[Change::AddMasq4(a)]).unwrap();
            fw.apply(&[Change::ExpireMasq4(a)]).unwrap();
            fw.apply(&[Change::AddMasq4(a)]).unwrap();
            let b = ip("10.89.0.6");
            fw.apply(&[Change::AddMasq4(b)]).unwrap();
            fw.apply(&[Change::ExpireMasq4(b)]).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            fw.apply(&[Change::AddMasq4(b)]).unwrap();
            let c = ip("10.89.0.7");
            fw.apply(&[Change::AddMasq4(c)]).unwrap();
            fw.apply(&[Change::ExpireMasq4(c)]).unwrap();
            assert!(wait_empty_of(ns, "10.89.0.7", Duration::from_secs(2)).is_some());
            std::thread::sleep(Duration::from_millis(1200));
            fw.apply(&[Change::AddMasq4(c)]).unwrap();
            // Past the 1 s timeout: all three still there, without a timeout
            // (nft prints an element with a timeout as an object).
            std::thread::sleep(Duration::from_millis(1500));
            let mut got = elems(ns, SET_MASQ4);
            got.sort_by_key(|v| v.to_string());
            assert_eq!(
                got,
                vec![json!("10.89.0.5"), json!("10.89.0.6"), json!("10.89.0.7")]
            );
            let text = ns.nft(&["list", "set", "inet", "nethook", SET_MASQ4]);
            assert!(
                !text.contains("timeout 1s") && !text.contains("expires"),
                "{text}"
            );
            let snap = fw.snapshot().unwrap().unwrap();
            assert_eq!(snap.masq4.len(), 3);
        });
    }

    #[test]
    fn delete_fallback_expires_by_deleting() {
        if skip("delete_fallback_expires_by_deleting") {
            return;
        }
        in_netns(|ns| {
            let mut fw = base(ns);
            fw.set_expire_mode(ExpireMode::Delete);
            fw.apply(&[Change::AddMasq4(ip("10.89.0.5"))]).unwrap();
            fw.apply(&[Change::ExpireMasq4(ip("10.89.0.5"))]).unwrap();
            assert!(elems(ns, SET_MASQ4).is_empty());
            // Already gone: still Ok (the batch adds before it deletes).
            fw.apply(&[Change::ExpireMasq4(ip("10.89.0.5"))]).unwrap();
            fw.apply(&[Change::AddMasq4(ip("10.89.0.5"))]).unwrap();
            assert_eq!(elems(ns, SET_MASQ4), vec![json!("10.89.0.5")]);
        });
    }

    #[test]
    fn a_failing_change_fails_the_whole_batch() {
        if skip("a_failing_change_fails_the_whole_batch") {
            return;
        }
        in_netns(|ns| {
            let mut fw = base(ns);
            let err = fw
                .apply(&[
                    Change::AddBridge("br1".into()),
                    Change::AddMasq4(ip("10.89.0.5")),
                    Change::AddNet4(net("10.89.0.0/16")),
                    Change::RemoveBridge("absent".into()),
                ])
                .unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENOENT));
            assert_eq!(
                err.to_string(),
                "nftables: removing bridge absent from set bridges failed: No such file or directory (ENOENT); run 'nethook restore'"
            );
            assert!(elems(ns, SET_BRIDGES).is_empty());
            assert!(elems(ns, SET_MASQ4).is_empty());
            assert!(elems(ns, SET_NETS4).is_empty());
            // A bad name is refused before anything is sent.
            let err = fw
                .apply(&[
                    Change::AddMasq4(ip("10.89.0.5")),
                    Change::AddBridge("x".repeat(16)),
                ])
                .unwrap_err();
            assert!(matches!(err, FirewallError::BridgeName { .. }), "{err}");
            assert!(elems(ns, SET_MASQ4).is_empty());
        });
    }

    #[test]
    fn remove_table_is_idempotent() {
        if skip("remove_table_is_idempotent") {
            return;
        }
        in_netns(|ns| {
            let mut fw = base(ns);
            fw.remove_table().unwrap();
            fw.remove_table().unwrap();
            assert!(!ns.nft(&["list", "tables"]).contains("nethook"));
            assert!(!fw.table_exists().unwrap());
            assert_eq!(fw.snapshot().unwrap(), None);
            // Without the table, changes fail and say what to do.
            let err = fw.apply(&[Change::AddMasq4(ip("10.89.0.5"))]).unwrap_err();
            assert_eq!(
                err.to_string(),
                "nftables: adding element 10.89.0.5 to set masq4 failed: No such file or directory (ENOENT); run 'nethook restore'"
            );
            assert!(fw.ensure_base().unwrap());
            assert!(fw.table_exists().unwrap());
        });
    }

    #[test]
    fn nets4_matches_in_the_datapath() {
        if skip("nets4_matches_in_the_datapath") {
            return;
        }
        in_netns(|ns| {
            let mut fw = base(ns);
            fw.apply(&[Change::AddNet4(net("10.89.0.0/16"))]).unwrap();
            // Count locally sent packets whose destination is in @nets4.
            ns.run("ip", &["link", "set", "lo", "up"]);
            ns.run("ip", &["route", "add", "local", "10.0.0.0/8", "dev", "lo"]);
            ns.nft(&[
                "add",
                "chain",
                "inet",
                "nethook",
                "probe",
                "{ type filter hook output priority 0; }",
            ]);
            ns.nft(&[
                "add", "rule", "inet", "nethook", "probe", "ip", "daddr", "@nets4", "counter",
            ]);
            // A listener, so no ICMP port-unreachable comes back to count.
            let _sink = std::net::UdpSocket::bind("0.0.0.0:9").unwrap();
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            for dst in [
                "10.88.255.255:9",
                "10.89.0.1:9",
                "10.89.255.254:9",
                "10.90.0.0:9",
            ] {
                sock.send_to(b"x", dst).unwrap();
            }
            let text = ns.nft(&["list", "chain", "inet", "nethook", "probe"]);
            // 10.89.0.1 and 10.89.255.254 only: no leading zero element needed.
            assert!(text.contains("counter packets 2 "), "{text}");
        });
    }

    fn stats(name: &str, mut v: Vec<Duration>) {
        v.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        eprintln!(
            "timing {name}: median {:.0} us, min {:.0} us, max {:.0} us (n={})",
            us(v[v.len() / 2]),
            us(v[0]),
            us(v[v.len() - 1]),
            v.len()
        );
    }

    #[test]
    fn timings() {
        if skip("timings") {
            return;
        }
        in_netns(|_ns| {
            let t = Instant::now();
            let mut fw = Firewall::open().unwrap();
            let open = t.elapsed();
            let t = Instant::now();
            assert!(fw.ensure_base().unwrap());
            let create = t.elapsed();
            let t = Instant::now();
            assert!(!fw.ensure_base().unwrap());
            let exists = t.elapsed();
            drop(fw);
            eprintln!(
                "timing open: {open:?}, ensure_base creating: {create:?}, ensure_base existing: {exists:?}"
            );

            // Each step as the hook does it: open, one apply, close. The
            // close matters: closing a netfilter netlink socket flushes the
            // kernel's pending nf_tables destroy work, which waits for an RCU
            // grace period when a transaction deleted something.
            let step = |change: Change, mode: ExpireMode| -> (Duration, Duration) {
                let mut fw = Firewall::open().unwrap();
                fw.set_expire_mode(mode);
                let t = Instant::now();
                fw.apply(&[change]).unwrap();
                let apply = t.elapsed();
                let t = Instant::now();
                drop(fw);
                (apply, t.elapsed())
            };
            let mut rows: Vec<(&str, Vec<Duration>, Vec<Duration>)> = vec![
                ("AddMasq4 (new element)", vec![], vec![]),
                ("ExpireMasq4 (timeout update)", vec![], vec![]),
                ("AddMasq4 (re-add of an expiring element)", vec![], vec![]),
                ("ExpireMasq4 by real delete (add+delete)", vec![], vec![]),
                ("RemoveBridge (real delete)", vec![], vec![]),
            ];
            for i in 0..20u8 {
                let a = Ipv4Addr::new(10, 89, 1, i + 1);
                let br = format!("br{i}");
                let steps = [
                    (Change::AddMasq4(a), ExpireMode::Timeout),
                    (Change::ExpireMasq4(a), ExpireMode::Timeout),
                    (Change::AddMasq4(a), ExpireMode::Timeout),
                    (Change::ExpireMasq4(a), ExpireMode::Delete),
                ];
                for (row, (change, mode)) in steps.into_iter().enumerate() {
                    let (apply, close) = step(change, mode);
                    rows[row].1.push(apply);
                    rows[row].2.push(close);
                }
                step(Change::AddBridge(br.clone()), ExpireMode::Timeout);
                let (apply, close) = step(Change::RemoveBridge(br), ExpireMode::Timeout);
                rows[4].1.push(apply);
                rows[4].2.push(close);
            }
            for (name, apply, close) in rows {
                stats(&format!("{name}: apply"), apply);
                stats(&format!("{name}: socket close"), close);
            }
            let mut fw = Firewall::open().unwrap();
            let t = Instant::now();
            fw.remove_table().unwrap();
            eprintln!("timing remove_table: {:?}", t.elapsed());
        });
    }
}
