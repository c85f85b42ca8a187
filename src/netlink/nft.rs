//! nf_tables over netlink: a socket, a batch builder and typed builders for
//! tables, chains, sets, set elements and rules.
//!
//! Every byte nethook sends to nf_tables is built here, with the message
//! types of `netlink-packet-netfilter`; expressions that crate does not know
//! (ct, masq, nat, fib, counter) are built through `Expressions::Other` with
//! the attribute numbers of include/uapi/linux/netfilter/nf_tables.h.
//!
//! Changes go to the kernel as one batch (one transaction): NFNL_MSG_BATCH_BEGIN,
//! the messages, NFNL_MSG_BATCH_END, in a single sendmsg. Every message asks
//! for an ack, so a failure names the message that caused it.
//!
//! The code is synchronous on purpose: nfnetlink processes a batch inside the
//! sendmsg call, so every ack is already queued on the socket when sendmsg
//! returns. Reading them needs no event loop and no threads.
//!
//! Cost to know about: a transaction that deletes anything (rule, set,
//! element, table) returns fast, but leaves destroy work that waits for an
//! RCU grace period, and the kernel waits for that work when a netfilter
//! netlink socket is closed (NETLINK_URELEASE), i.e. when the process exits:
//! 8-27 ms on this kernel. Adds leave none.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DefaultNla, Emitable, NetlinkMessage, NLA_F_NESTED, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook as NlHook, HookNumber, Immediate, ListAttribute, Lookup, Meta, NfTablesMessage, Payload,
    RuleAttribute, RuleMessage, SetAttribute, SetElementAttribute, SetElementFlags, SetElementList,
    SetElementMessage, SetFlags, SetMessage, TableAttribute, TableFlags, TableMessage,
    Verdict as NlVerdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

pub use netlink_packet_netfilter::nftables::{MetaKey, Operator as CmpOp, Register};

// ---------------------------------------------------------------------------
// Constants from the kernel headers that the crate does not export.

/// include/uapi/linux/netfilter/nfnetlink.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNETLINK_V0: u8 = 0;
/// NLMSG_ERROR, NLMSG_DONE (include/uapi/linux/netlink.h).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_OFFS: u16 = 2;
/// Size of the nfgenmsg header that follows every nlmsghdr.
const NFGENMSG_LEN: usize = 4;
/// NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM: the type of dumped elements.
const NFT_MSG_NEWSETELEM_TYPE: u16 = (NFNL_SUBSYS_NFTABLES << 8) | 12;

/// nf_tables.h: NFTA_DATA_*, NFTA_LIST_ELEM, NFTA_SET_DESC*, NFTA_SET_FIELD_LEN.
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_DESC_CONCAT: u16 = 2;
const NFTA_SET_FIELD_LEN: u16 = 1;
/// nf_tables.h: NFT_DATA_VERDICT, the data "type" of a verdict map.
pub const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

/// An NLA's length field is 16 bits: keep every element list well below it and
/// split big element lists over several messages of the same batch.
const MAX_ELEMENTS_NEST: usize = 60 * 1024;

/// How long to wait for acks that were not queued when sendmsg returned. The
/// kernel answers inside sendmsg, so this only bounds a kernel bug or a lost
/// reply; it never delays the normal path.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Receive buffer for one datagram; a dump part is at most a few pages.
const RECV_BUF_LEN: usize = 128 * 1024;
/// What one ack costs in the socket's receive buffer (skb truesize), rounded up:
/// used to grow the buffer so a large batch does not lose acks to ENOBUFS.
const ACK_TRUESIZE: usize = 1024;

// ---------------------------------------------------------------------------
// Errors

/// A failure talking to nf_tables. The messages are one line: what was being
/// done, what the kernel said, and what to do about it.
#[derive(thiserror::Error, Debug)]
pub enum NftError {
    #[error(
        "nftables: opening a netlink socket failed: {}; nethook needs a kernel with nf_tables (CONFIG_NF_TABLES)",
        io_text(.0)
    )]
    Open(#[source] io::Error),

    #[error("nftables: sending {what} to the kernel failed: {}; {}", io_text(.err), io_hint(.err))]
    Send {
        what: String,
        #[source]
        err: io::Error,
    },

    #[error(
        "nftables: reading the kernel's answer to {what} failed: {}; the change may or may not be in place, run 'nethook check'",
        io_text(.err)
    )]
    Recv {
        what: String,
        #[source]
        err: io::Error,
    },

    #[error(
        "nftables: the kernel did not confirm {what} ({missing} of {total} acks missing); the change may or may not be in place, run 'nethook check'"
    )]
    MissingAck {
        what: String,
        missing: usize,
        total: usize,
    },

    #[error(
        "nftables: the kernel's answer to {what} is malformed ({reason}); run 'nethook doctor'"
    )]
    Malformed { what: String, reason: String },

    #[error("nftables: {what} is not valid: {reason}; this is a bug in nethook, please report it")]
    Invalid { what: String, reason: String },

    /// The kernel refused a message. `index` is the message's position in the
    /// batch (None: the batch as a whole, e.g. its commit); `detail` is the
    /// kernel's extended-ack text, `attr` the attribute its extended ack
    /// points at (for debug logs: too cryptic for the one-line message).
    #[error(
        "nftables: {what} failed: {}{}; {}",
        errno_text(*.errno),
        .detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default(),
        errno_hint(*.errno)
    )]
    Kernel {
        what: String,
        errno: i32,
        detail: Option<String>,
        attr: Option<String>,
        index: Option<usize>,
    },
}

impl NftError {
    /// The errno the kernel answered with, if this is a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// Which attribute the kernel's extended ack blamed ("attribute 3/1":
    /// types from the top of the message), for debug logs.
    pub fn attr_path(&self) -> Option<&str> {
        match self {
            NftError::Kernel { attr, .. } => attr.as_deref(),
            _ => None,
        }
    }

    /// Position in the batch of the message the kernel refused.
    pub fn failed_index(&self) -> Option<usize> {
        match self {
            NftError::Kernel { index, .. } => *index,
            _ => None,
        }
    }
}

fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ERESTART => "ERESTART",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ENOBUFS => "ENOBUFS",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        // The kernel-internal ENOTSUPP leaks out of some nf_tables paths.
        524 => "ENOTSUPP",
        _ => return None,
    })
}

/// "File exists (EEXIST)": strerror without Rust's "(os error N)" suffix, plus
/// the symbolic name people search for.
fn errno_text(errno: i32) -> String {
    if errno == 524 {
        return "Operation not supported by the kernel (ENOTSUPP)".to_string();
    }
    let text = io::Error::from_raw_os_error(errno).to_string();
    let text = match text.rfind(" (os error") {
        Some(pos) => text[..pos].to_string(),
        None => text,
    };
    match errno_name(errno) {
        Some(name) => format!("{text} ({name})"),
        None => format!("{text} (errno {errno})"),
    }
}

fn io_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(errno) => errno_text(errno),
        None => err.to_string(),
    }
}

fn errno_hint(errno: i32) -> &'static str {
    match errno {
        libc::EPERM | libc::EACCES => {
            "nethook needs CAP_NET_ADMIN in this network namespace; run it as root"
        }
        libc::EOPNOTSUPP | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | 524 => {
            "the kernel lacks an nf_tables feature nethook needs; run 'nethook doctor'"
        }
        libc::ENOMEM | libc::ENOBUFS | libc::EAGAIN | libc::EINTR => {
            "the kernel was short of resources; retry"
        }
        libc::EINVAL | libc::ERANGE | libc::E2BIG | libc::EMSGSIZE | libc::EOVERFLOW => {
            "the kernel rejected nethook's request; run 'nethook doctor' and report a bug"
        }
        _ => "run 'nethook restore'",
    }
}

fn io_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(errno) => errno_hint(errno),
        None => "retry",
    }
}

// ---------------------------------------------------------------------------
// Typed building blocks

/// nf_tables address family of a table (NFPROTO_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Inet,
    Ip,
    Ip6,
    Arp,
    Bridge,
    Netdev,
}

impl Family {
    fn proto(self) -> NetfilterProtoFamily {
        match self {
            Family::Inet => NetfilterProtoFamily::Inet,
            Family::Ip => NetfilterProtoFamily::IPv4,
            Family::Ip6 => NetfilterProtoFamily::IPv6,
            Family::Arp => NetfilterProtoFamily::ARP,
            Family::Bridge => NetfilterProtoFamily::Bridge,
            Family::Netdev => NetfilterProtoFamily::NetDev,
        }
    }

    /// NFPROTO_* number, as the nat expression wants it.
    pub fn number(self) -> u32 {
        u8::from(self.proto()) as u32
    }

    /// The name nft uses for this family.
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }
}

/// A verdict: the data of an `immediate` to the verdict register, or the data
/// of a verdict-map element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    /// NF_DROP, NF_ACCEPT and the NFT_* verdict codes (negative, sent as u32).
    fn code(&self) -> u32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Continue => -1i32 as u32,
            Verdict::Jump(_) => -3i32 as u32,
            Verdict::Goto(_) => -4i32 as u32,
            Verdict::Return => -5i32 as u32,
        }
    }

    fn from_attrs(attrs: &[VerdictAttribute]) -> Option<Verdict> {
        let mut code = None;
        let mut chain = None;
        for attr in attrs {
            match attr {
                VerdictAttribute::Code(c) => code = Some(u32::from(*c)),
                VerdictAttribute::Chain(c) => chain = Some(c.clone()),
                _ => {}
            }
        }
        Some(match code? as i32 {
            0 => Verdict::Drop,
            1 => Verdict::Accept,
            -1 => Verdict::Continue,
            -3 => Verdict::Jump(chain?),
            -4 => Verdict::Goto(chain?),
            -5 => Verdict::Return,
            _ => return None,
        })
    }

    fn attrs(&self) -> Vec<VerdictAttribute> {
        let mut attrs = vec![VerdictAttribute::Code(NlVerdict::from(self.code()))];
        if let Verdict::Jump(chain) | Verdict::Goto(chain) = self {
            attrs.push(VerdictAttribute::Chain(chain.clone()));
        }
        attrs
    }
}

/// Data in registers, set elements and comparisons: raw bytes (in the byte
/// order the kernel compares them in) or a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Value(Vec<u8>),
    Verdict(Verdict),
}

impl Data {
    fn attr(&self) -> DataAttribute {
        match self {
            Data::Value(bytes) => DataAttribute::Value(bytes.clone()),
            Data::Verdict(v) => DataAttribute::Verdict(v.attrs()),
        }
    }
}

/// nft's data type ids (nftables src/datatype.h), used as set key and data
/// types. The kernel only stores them; nft uses them to print elements.
pub mod datatype {
    pub const VERDICT: u32 = 1;
    pub const NFPROTO: u32 = 2;
    pub const INTEGER: u32 = 4;
    pub const STRING: u32 = 5;
    pub const LLADDR: u32 = 6;
    pub const IPV4_ADDR: u32 = 7;
    pub const IPV6_ADDR: u32 = 8;
    pub const ETHER_ADDR: u32 = 9;
    pub const ETHER_TYPE: u32 = 10;
    pub const INET_PROTO: u32 = 12;
    pub const INET_SERVICE: u32 = 13;
    pub const MARK: u32 = 19;
    pub const IFINDEX: u32 = 20;
    pub const CT_STATE: u32 = 26;
    pub const IFNAME: u32 = 41;

    /// nft's TYPE_BITS: each member of a concatenation takes six bits.
    const TYPE_BITS: u32 = 6;

    /// The type id of a concatenation (`inet_proto . inet_service` is
    /// `concat(&[INET_PROTO, INET_SERVICE])`), as nft computes it.
    pub fn concat(types: &[u32]) -> u32 {
        types.iter().fold(0, |acc, t| (acc << TYPE_BITS) | t)
    }

    /// The key length of a concatenation: each member takes whole 32-bit
    /// registers, so members are padded to a multiple of 4 bytes.
    pub fn concat_len(member_lens: &[u32]) -> u32 {
        member_lens.iter().map(|l| l.div_ceil(4) * 4).sum()
    }
}

/// Set flags (nf_tables.h NFT_SET_*).
pub mod set_flags {
    pub const ANONYMOUS: u32 = 0x1;
    pub const CONSTANT: u32 = 0x2;
    pub const INTERVAL: u32 = 0x4;
    pub const MAP: u32 = 0x8;
    pub const TIMEOUT: u32 = 0x10;
    pub const EVAL: u32 = 0x20;
    pub const OBJECT: u32 = 0x40;
    pub const CONCAT: u32 = 0x80;
}

/// Conntrack state bits (NF_CT_STATE_*_BIT), host byte order in the register.
pub mod ct_state {
    pub const INVALID: u32 = 1;
    pub const ESTABLISHED: u32 = 2;
    pub const RELATED: u32 = 4;
    pub const NEW: u32 = 8;
    pub const UNTRACKED: u32 = 64;
}

/// Standard chain priorities (nft's names for them).
pub mod priority {
    pub const RAW: i32 = -300;
    pub const MANGLE: i32 = -150;
    pub const DSTNAT: i32 = -100;
    pub const FILTER: i32 = 0;
    pub const SECURITY: i32 = 50;
    pub const SRCNAT: i32 = 100;
}

/// How a table/chain/set/element is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// NLM_F_CREATE | NLM_F_EXCL: EEXIST if it is already there.
    Create,
    /// NLM_F_CREATE: add it, or update it when it exists (for set elements:
    /// refresh timeout and expiration, or make the element permanent).
    Ensure,
}

impl Mode {
    fn flags(self) -> u16 {
        match self {
            Mode::Create => NLM_F_CREATE | NLM_F_EXCL,
            Mode::Ensure => NLM_F_CREATE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    /// NFT_TABLE_F_* (0: an ordinary table that outlives the process).
    pub flags: u32,
    /// NFTA_TABLE_USERDATA (empty: none), see `table_comment_userdata`.
    pub userdata: Vec<u8>,
}

impl Table {
    pub fn new(family: Family, name: &str) -> Self {
        Table {
            family,
            name: name.to_string(),
            flags: 0,
            userdata: Vec::new(),
        }
    }

    pub fn userdata(mut self, userdata: Vec<u8>) -> Self {
        self.userdata = userdata;
        self
    }
}

/// libnftnl's NFTNL_UDATA_TABLE_COMMENT TLV (type 0, length u8, the text
/// with its NUL), as nft writes `comment "..."` into NFTA_TABLE_USERDATA.
/// Longer comments are cut at 253 bytes (the kernel keeps at most 256 bytes
/// of userdata; nft itself allows 128).
pub fn table_comment_userdata(comment: &str) -> Vec<u8> {
    let text = &comment.as_bytes()[..comment.len().min(253)];
    let mut out = Vec::with_capacity(text.len() + 3);
    out.push(0);
    out.push((text.len() + 1) as u8);
    out.extend_from_slice(text);
    out.push(0);
    out
}

/// The comment in a table's userdata (what nft shows as `comment "..."`).
pub fn table_comment(userdata: &[u8]) -> Option<String> {
    let mut at = 0;
    while at + 2 <= userdata.len() {
        let (kind, len) = (userdata[at], userdata[at + 1] as usize);
        let value = userdata.get(at + 2..at + 2 + len)?;
        if kind == 0 {
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        at += 2 + len;
    }
    None
}

/// A base chain as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedChain {
    pub family: Family,
    pub table: String,
    pub name: String,
    /// NF_INET_* hook number (2 = forward).
    pub hook: u32,
    pub priority: i32,
    /// False: policy drop.
    pub policy_accept: bool,
}

impl Default for ListedChain {
    fn default() -> Self {
        ListedChain {
            family: Family::Inet,
            table: String::new(),
            name: String::new(),
            hook: 0,
            priority: 0,
            policy_accept: true,
        }
    }
}

/// A NUL-terminated netlink string attribute.
fn nla_string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// What GETTABLE says about an existing table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableInfo {
    /// The kernel's handle: a later table of the same name has another one.
    pub handle: u64,
    pub flags: u32,
    /// Number of chains (NFTA_TABLE_USE).
    pub chains: u32,
    pub userdata: Vec<u8>,
}

/// Netfilter hooks of the ip/ip6/inet families (NF_INET_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Ingress,
}

impl Hook {
    fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
            Hook::Ingress => 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

impl ChainType {
    fn name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// What makes a chain a base chain: where it hooks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: i32,
    /// None: no policy attribute (the kernel's default, accept).
    pub policy: Option<Policy>,
    /// The device of a netdev/inet ingress chain.
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub family: Family,
    pub table: String,
    pub name: String,
    /// None: a regular chain, reached by jump/goto.
    pub base: Option<BaseChain>,
}

impl Chain {
    pub fn base(
        family: Family,
        table: &str,
        name: &str,
        kind: ChainType,
        hook: Hook,
        priority: i32,
        policy: Policy,
    ) -> Self {
        Chain {
            family,
            table: table.to_string(),
            name: name.to_string(),
            base: Some(BaseChain {
                kind,
                hook,
                priority,
                policy: Some(policy),
                device: None,
            }),
        }
    }

    pub fn regular(family: Family, table: &str, name: &str) -> Self {
        Chain {
            family,
            table: table.to_string(),
            name: name.to_string(),
            base: None,
        }
    }
}

/// Byte order of set keys/data as nft records it in the set's userdata
/// (nft's enum byteorder); nft needs it to print host-order keys such as
/// ifname correctly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    Invalid,
    Host,
    Big,
}

impl ByteOrder {
    fn value(self) -> u32 {
        match self {
            ByteOrder::Invalid => 0,
            ByteOrder::Host => 1,
            ByteOrder::Big => 2,
        }
    }
}

/// libnftnl's NFTNL_UDATA_SET_KEYBYTEORDER / NFTNL_UDATA_SET_DATABYTEORDER
/// TLVs (type u8, length u8, value), as nft writes them into NFTA_SET_USERDATA.
pub fn set_userdata(key: ByteOrder, data: Option<ByteOrder>) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&[0, 4]);
    out.extend_from_slice(&key.value().to_ne_bytes());
    if let Some(data) = data {
        out.extend_from_slice(&[1, 4]);
        out.extend_from_slice(&data.value().to_ne_bytes());
    }
    out
}

/// A set or map definition. General enough for concatenated keys and for
/// verdict maps: key type id and length, optional data type id and length,
/// flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDef {
    pub family: Family,
    pub table: String,
    pub name: String,
    /// set_flags::*; MAP is added when `data` is set.
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    /// (data type id, data length) of a map. For a verdict map use
    /// (NFT_DATA_VERDICT, 0), see `SetDef::verdict_map`.
    pub data: Option<(u32, u32)>,
    /// Default element timeout (NFTA_SET_TIMEOUT), milliseconds.
    pub timeout_ms: Option<u64>,
    /// Expected number of elements (NFTA_SET_DESC_SIZE).
    pub size: Option<u32>,
    /// Byte lengths of the members of a concatenated key
    /// (NFTA_SET_DESC_CONCAT); the kernel needs them for concat + interval.
    pub concat_lens: Vec<u32>,
    /// NFTA_SET_USERDATA, see `set_userdata`.
    pub userdata: Vec<u8>,
}

impl SetDef {
    pub fn new(family: Family, table: &str, name: &str, key_type: u32, key_len: u32) -> Self {
        SetDef {
            family,
            table: table.to_string(),
            name: name.to_string(),
            flags: 0,
            key_type,
            key_len,
            data: None,
            timeout_ms: None,
            size: None,
            concat_lens: Vec::new(),
            userdata: Vec::new(),
        }
    }

    pub fn flags(mut self, flags: u32) -> Self {
        self.flags |= flags;
        self
    }

    pub fn map(mut self, data_type: u32, data_len: u32) -> Self {
        self.data = Some((data_type, data_len));
        self
    }

    pub fn verdict_map(self) -> Self {
        self.map(NFT_DATA_VERDICT, 0)
    }

    pub fn userdata(mut self, userdata: Vec<u8>) -> Self {
        self.userdata = userdata;
        self
    }

    pub fn concat_lens(mut self, lens: &[u32]) -> Self {
        self.concat_lens = lens.to_vec();
        self
    }
}

/// Which set an element operation or a lookup refers to: by name, plus the
/// transaction id when the set is created in the same batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRef {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub id: Option<u32>,
}

impl SetRef {
    pub fn named(family: Family, table: &str, name: &str) -> Self {
        SetRef {
            family,
            table: table.to_string(),
            name: name.to_string(),
            id: None,
        }
    }
}

/// One set element. For interval sets, a range is two elements: the start
/// key, and the first key after the range with `interval_end`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub key: Vec<u8>,
    /// NFTA_SET_ELEM_KEY_END (concatenated ranges).
    pub key_end: Option<Vec<u8>>,
    pub data: Option<Data>,
    /// NFT_SET_ELEM_INTERVAL_END.
    pub interval_end: bool,
    /// NFTA_SET_ELEM_TIMEOUT, milliseconds.
    pub timeout_ms: Option<u64>,
    /// NFTA_SET_ELEM_EXPIRATION, milliseconds until the element expires.
    pub expiration_ms: Option<u64>,
}

impl Element {
    pub fn new(key: Vec<u8>) -> Self {
        Element {
            key,
            ..Default::default()
        }
    }

    pub fn data(mut self, data: Data) -> Self {
        self.data = Some(data);
        self
    }

    pub fn interval_end(mut self) -> Self {
        self.interval_end = true;
        self
    }

    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    pub fn expiration_ms(mut self, ms: u64) -> Self {
        self.expiration_ms = Some(ms);
        self
    }

    fn attrs(&self) -> Vec<SetElementAttribute> {
        // Same attribute order as nft/libnftnl, so golden tests can compare bytes.
        let mut attrs = Vec::new();
        if self.interval_end {
            attrs.push(SetElementAttribute::Flags(SetElementFlags::IntervalEnd));
        }
        if let Some(ms) = self.timeout_ms {
            attrs.push(SetElementAttribute::Timeout(ms));
        }
        if let Some(ms) = self.expiration_ms {
            attrs.push(SetElementAttribute::Expiration(ms));
        }
        attrs.push(SetElementAttribute::Key(DataAttribute::Value(
            self.key.clone(),
        )));
        if let Some(end) = &self.key_end {
            attrs.push(SetElementAttribute::KeyEnd(vec![DefaultNla::new(
                NFTA_DATA_VALUE,
                end.clone(),
            )]));
        }
        if let Some(data) = &self.data {
            attrs.push(SetElementAttribute::Data(data.attr()));
        }
        attrs
    }
}

/// Payload bases (NFT_PAYLOAD_*_HEADER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    Link,
    Network,
    Transport,
    Inner,
}

impl PayloadBase {
    fn number(self) -> u32 {
        match self {
            PayloadBase::Link => 0,
            PayloadBase::Network => 1,
            PayloadBase::Transport => 2,
            PayloadBase::Inner => 3,
        }
    }
}

/// Conntrack keys (NFT_CT_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    State,
    Direction,
    Status,
    Mark,
    L3Protocol,
    Protocol,
    ProtoSrc,
    ProtoDst,
    Other(u32),
}

impl CtKey {
    fn number(self) -> u32 {
        match self {
            CtKey::State => 0,
            CtKey::Direction => 1,
            CtKey::Status => 2,
            CtKey::Mark => 3,
            CtKey::L3Protocol => 7,
            CtKey::Protocol => 10,
            CtKey::ProtoSrc => 11,
            CtKey::ProtoDst => 12,
            CtKey::Other(n) => n,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    Snat,
    Dnat,
}

/// One raw attribute of an `Expr::Raw`, for expressions not modelled here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAttr {
    /// Attribute type, with NLA_F_NESTED set when `value` holds NLAs.
    pub kind: u16,
    pub value: Vec<u8>,
}

/// A rule expression, in the order nft --debug=netlink prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `[ meta load KEY => reg DREG ]`
    Meta { key: MetaKey, dreg: Register },
    /// `[ payload load LENb @ BASE header + OFFSET => reg DREG ]`
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: Register,
    },
    /// `[ cmp OP reg SREG DATA ]`
    Cmp {
        sreg: Register,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `[ bitwise reg DREG = ( reg SREG & MASK ) ^ XOR ]`
    Bitwise {
        sreg: Register,
        dreg: Register,
        len: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `[ lookup reg SREG set NAME [dreg DREG] [0x1] ]`
    Lookup {
        sreg: Register,
        set: SetRef,
        dreg: Option<Register>,
        invert: bool,
    },
    /// `[ immediate reg DREG DATA ]`
    Immediate { dreg: Register, data: Data },
    /// `[ ct load KEY => reg DREG ]`
    Ct { key: CtKey, dreg: Register },
    /// `[ masq ]`, with optional NF_NAT_RANGE_* flags and port-range registers.
    Masq {
        flags: u32,
        proto_min: Option<Register>,
        proto_max: Option<Register>,
    },
    /// `[ nat snat|dnat FAMILY addr_min reg .. proto_min reg .. ]`
    Nat {
        kind: NatKind,
        family: Family,
        addr_min: Option<Register>,
        addr_max: Option<Register>,
        proto_min: Option<Register>,
        proto_max: Option<Register>,
        flags: u32,
    },
    /// `[ fib ... => reg DREG ]` (NFTA_FIB_F_* flags, NFT_FIB_RESULT_*).
    Fib {
        flags: u32,
        result: u32,
        dreg: Register,
    },
    /// `[ counter ]`
    Counter,
    /// Any other expression, by name and raw attributes.
    Raw { name: String, attrs: Vec<RawAttr> },
}

fn u32_nla(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

fn reg_nla(kind: u16, reg: Register) -> DefaultNla {
    u32_nla(kind, u32::from(reg))
}

impl Expr {
    /// `immediate reg 0 accept` and friends.
    pub fn verdict(v: Verdict) -> Expr {
        Expr::Immediate {
            dreg: Register::Verdict,
            data: Data::Verdict(v),
        }
    }

    pub fn accept() -> Expr {
        Expr::verdict(Verdict::Accept)
    }

    pub fn lookup(set: &SetRef, sreg: Register) -> Expr {
        Expr::Lookup {
            sreg,
            set: set.clone(),
            dreg: None,
            invert: false,
        }
    }

    pub fn lookup_not(set: &SetRef, sreg: Register) -> Expr {
        Expr::Lookup {
            sreg,
            set: set.clone(),
            dreg: None,
            invert: true,
        }
    }

    /// A map lookup that writes the element's data into `dreg`
    /// (Register::Verdict for a vmap).
    pub fn map(set: &SetRef, sreg: Register, dreg: Register) -> Expr {
        Expr::Lookup {
            sreg,
            set: set.clone(),
            dreg: Some(dreg),
            invert: false,
        }
    }

    pub fn masq() -> Expr {
        Expr::Masq {
            flags: 0,
            proto_min: None,
            proto_max: None,
        }
    }

    fn other(name: &str, attributes: Vec<DefaultNla>) -> Expressions {
        Expressions::Other {
            expression_type: name.to_string(),
            attributes,
        }
    }

    fn build(&self) -> ListAttribute<ExpressionAttribute> {
        // Attribute order follows libnftnl so the golden tests compare bytes.
        let ex = match self {
            Expr::Meta { key, dreg } => {
                Expressions::Meta(vec![Meta::Key(*key), Meta::DestinationRegister(*dreg)])
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => Expressions::Payload(vec![
                Payload::DestinationRegister(*dreg),
                Payload::Base(base.number()),
                Payload::Offset(*offset),
                Payload::Len(*len),
            ]),
            Expr::Cmp { sreg, op, data } => Expressions::Cmp(vec![
                Cmp::SourceRegister(*sreg),
                Cmp::Op(*op),
                Cmp::Data(DataAttribute::Value(data.clone())),
            ]),
            Expr::Bitwise {
                sreg,
                dreg,
                len,
                mask,
                xor,
            } => Expressions::Bitwise(vec![
                Bitwise::SourceRegister(*sreg),
                Bitwise::DestinationRegister(*dreg),
                Bitwise::Length(*len),
                Bitwise::Mask(DataAttribute::Value(mask.clone())),
                Bitwise::Xor(DataAttribute::Value(xor.clone())),
            ]),
            Expr::Lookup {
                sreg,
                set,
                dreg,
                invert,
            } => {
                let mut attrs = vec![Lookup::SourceRegister(*sreg)];
                if let Some(dreg) = dreg {
                    attrs.push(Lookup::DestinationRegister(*dreg));
                }
                attrs.push(Lookup::Set(set.name.clone()));
                if let Some(id) = set.id {
                    attrs.push(Lookup::SetId(id));
                }
                if *invert {
                    // NFT_LOOKUP_F_INV
                    attrs.push(Lookup::Flags(1));
                }
                Expressions::Lookup(attrs)
            }
            Expr::Immediate { dreg, data } => Expressions::Immediate(vec![
                Immediate::DestinationRegister(*dreg),
                Immediate::Data(data.attr()),
            ]),
            Expr::Ct { key, dreg } => {
                // NFTA_CT_KEY = 2, NFTA_CT_DREG = 1
                Self::other("ct", vec![u32_nla(2, key.number()), reg_nla(1, *dreg)])
            }
            Expr::Masq {
                flags,
                proto_min,
                proto_max,
            } => {
                // NFTA_MASQ_FLAGS = 1, REG_PROTO_MIN = 2, REG_PROTO_MAX = 3
                let mut attrs = Vec::new();
                if *flags != 0 {
                    attrs.push(u32_nla(1, *flags));
                }
                if let Some(r) = proto_min {
                    attrs.push(reg_nla(2, *r));
                }
                if let Some(r) = proto_max {
                    attrs.push(reg_nla(3, *r));
                }
                Self::other("masq", attrs)
            }
            Expr::Nat {
                kind,
                family,
                addr_min,
                addr_max,
                proto_min,
                proto_max,
                flags,
            } => {
                // NFTA_NAT_TYPE = 1, FAMILY = 2, REG_ADDR_MIN = 3, REG_ADDR_MAX = 4,
                // REG_PROTO_MIN = 5, REG_PROTO_MAX = 6, FLAGS = 7
                let mut attrs = vec![
                    u32_nla(1, if *kind == NatKind::Snat { 0 } else { 1 }),
                    u32_nla(2, family.number()),
                ];
                for (kind, reg) in [(3, addr_min), (4, addr_max), (5, proto_min), (6, proto_max)] {
                    if let Some(r) = reg {
                        attrs.push(reg_nla(kind, *r));
                    }
                }
                if *flags != 0 {
                    attrs.push(u32_nla(7, *flags));
                }
                Self::other("nat", attrs)
            }
            Expr::Fib {
                flags,
                result,
                dreg,
            } => {
                // NFTA_FIB_DREG = 1, RESULT = 2, FLAGS = 3, in libnftnl's
                // order (flags, result, dreg).
                Self::other(
                    "fib",
                    vec![u32_nla(3, *flags), u32_nla(2, *result), reg_nla(1, *dreg)],
                )
            }
            Expr::Counter => Self::other("counter", Vec::new()),
            Expr::Raw { name, attrs } => Self::other(
                name,
                attrs
                    .iter()
                    .map(|a| DefaultNla::new(a.kind, a.value.clone()))
                    .collect(),
            ),
        };
        ListAttribute::from(ex)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: Family,
    pub table: String,
    pub chain: String,
    pub exprs: Vec<Expr>,
}

impl Rule {
    pub fn new(family: Family, table: &str, chain: &str, exprs: Vec<Expr>) -> Self {
        Rule {
            family,
            table: table.to_string(),
            chain: chain.to_string(),
            exprs,
        }
    }
}

// ---------------------------------------------------------------------------
// Batch

struct Pending {
    body: NetfilterMessage,
    /// NLM_F_* besides NLM_F_REQUEST | NLM_F_ACK.
    flags: u16,
    what: String,
}

/// One nf_tables transaction: applied completely or not at all.
pub struct Batch {
    msgs: Vec<Pending>,
    next_set_id: u32,
}

fn check_name(what: &str, name: &str) -> Result<(), NftError> {
    // NFT_NAME_MAXLEN is 256 including the NUL; a NUL inside would silently
    // cut the name short in the kernel.
    if name.is_empty() || name.len() > 255 || name.contains('\0') {
        return Err(NftError::Invalid {
            what: what.to_string(),
            reason: format!("name {name:?} must be 1 to 255 bytes without NUL"),
        });
    }
    Ok(())
}

fn nft_header(family: Family) -> NetfilterHeader {
    NetfilterHeader::new(family.proto(), NFNETLINK_V0, 0)
}

/// Appends one NLA (header, value, padding) to `out`, for nests the crate
/// has no type for.
fn put_nla(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (len.div_ceil(4) * 4 - len), 0);
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

impl Batch {
    pub fn new() -> Self {
        Batch {
            msgs: Vec::new(),
            next_set_id: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    fn push(&mut self, family: Family, msg: NfTablesMessage, flags: u16, what: String) {
        self.msgs.push(Pending {
            body: NetfilterMessage::new(nft_header(family), msg),
            flags,
            what,
        });
    }

    pub fn add_table(&mut self, table: &Table, mode: Mode) -> Result<(), NftError> {
        let what = format!("creating table {} {}", table.family.name(), table.name);
        check_name(&what, &table.name)?;
        let mut attributes = vec![
            TableAttribute::Name(table.name.clone()),
            TableAttribute::Flags(TableFlags::from_bits_retain(table.flags)),
        ];
        if !table.userdata.is_empty() {
            attributes.push(TableAttribute::UserData(table.userdata.clone()));
        }
        self.push(
            table.family,
            NfTablesMessage::NewTable(TableMessage { attributes }),
            mode.flags(),
            what,
        );
        Ok(())
    }

    /// Deletes a table and everything in it (ENOENT if it is not there).
    pub fn delete_table(&mut self, family: Family, name: &str) -> Result<(), NftError> {
        let what = format!("deleting table {} {}", family.name(), name);
        check_name(&what, name)?;
        let attributes = vec![TableAttribute::Name(name.to_string())];
        self.push(
            family,
            NfTablesMessage::DeleteTable(TableMessage { attributes }),
            0,
            what,
        );
        Ok(())
    }

    /// Deletes the table with this handle (ENOENT if that one is gone, even
    /// when another table of the same name exists now): the safe way to
    /// replace a table someone else may be replacing at the same time.
    pub fn delete_table_handle(
        &mut self,
        family: Family,
        name: &str,
        handle: u64,
    ) -> Result<(), NftError> {
        let what = format!(
            "deleting table {} {} (handle {handle})",
            family.name(),
            name
        );
        check_name(&what, name)?;
        let attributes = vec![
            TableAttribute::Name(name.to_string()),
            TableAttribute::Handle(handle),
        ];
        self.push(
            family,
            NfTablesMessage::DeleteTable(TableMessage { attributes }),
            0,
            what,
        );
        Ok(())
    }

    pub fn add_chain(&mut self, chain: &Chain, mode: Mode) -> Result<(), NftError> {
        let what = format!("creating chain {} in table {}", chain.name, chain.table);
        check_name(&what, &chain.table)?;
        check_name(&what, &chain.name)?;
        let mut attributes = vec![
            ChainAttribute::Table(chain.table.clone()),
            ChainAttribute::Name(chain.name.clone()),
        ];
        if let Some(base) = &chain.base {
            attributes.push(ChainAttribute::Type(base.kind.name().to_string()));
            if let Some(policy) = base.policy {
                // NF_ACCEPT = 1, NF_DROP = 0
                attributes.push(ChainAttribute::Policy(match policy {
                    Policy::Accept => 1,
                    Policy::Drop => 0,
                }));
            }
            let mut hook = vec![
                NlHook::Number(HookNumber::Other(base.hook.number())),
                // The kernel reads the priority as a signed 32-bit value.
                NlHook::Priority(base.priority as u32),
            ];
            if let Some(dev) = &base.device {
                hook.push(NlHook::NetDeviceName(dev.clone()));
            }
            attributes.push(ChainAttribute::Hook(hook));
        }
        self.push(
            chain.family,
            NfTablesMessage::NewChain(ChainMessage { attributes }),
            mode.flags(),
            what,
        );
        Ok(())
    }

    /// Adds a set; the returned reference carries the set's transaction id,
    /// which rules and elements in this same batch need to find the new set.
    pub fn add_set(&mut self, set: &SetDef, mode: Mode) -> Result<SetRef, NftError> {
        let what = format!("creating set {} in table {}", set.name, set.table);
        check_name(&what, &set.table)?;
        check_name(&what, &set.name)?;
        let id = self.next_set_id;
        self.next_set_id += 1;
        let mut flags = set.flags;
        if set.data.is_some() {
            flags |= set_flags::MAP;
        }
        let mut attributes = vec![
            SetAttribute::Table(set.table.clone()),
            SetAttribute::Name(set.name.clone()),
            SetAttribute::Flags(SetFlags::from_bits_retain(flags)),
            SetAttribute::KeyType(set.key_type),
            SetAttribute::KeyLen(set.key_len),
        ];
        if let Some((data_type, data_len)) = set.data {
            attributes.push(SetAttribute::DataType(data_type));
            attributes.push(SetAttribute::DataLen(data_len));
        }
        if let Some(ms) = set.timeout_ms {
            attributes.push(SetAttribute::Timeout(ms));
        }
        attributes.push(SetAttribute::Id(id));
        if set.size.is_some() || !set.concat_lens.is_empty() {
            // Built by hand: the crate's SetDescription::Concat lacks the
            // NLA_F_NESTED flag the kernel's nested-array policy checks.
            let mut desc = Vec::new();
            if let Some(size) = set.size {
                put_nla(&mut desc, NFTA_SET_DESC_SIZE, &size.to_be_bytes());
            }
            if !set.concat_lens.is_empty() {
                let mut concat = Vec::new();
                for len in &set.concat_lens {
                    let mut field = Vec::new();
                    put_nla(&mut field, NFTA_SET_FIELD_LEN, &len.to_be_bytes());
                    put_nla(&mut concat, NFTA_LIST_ELEM | NLA_F_NESTED, &field);
                }
                put_nla(&mut desc, NFTA_SET_DESC_CONCAT | NLA_F_NESTED, &concat);
            }
            attributes.push(SetAttribute::Other(DefaultNla::new(
                NFTA_SET_DESC | NLA_F_NESTED,
                desc,
            )));
        }
        if !set.userdata.is_empty() {
            attributes.push(SetAttribute::UserData(set.userdata.clone()));
        }
        self.push(
            set.family,
            NfTablesMessage::NewSet(SetMessage { attributes }),
            mode.flags(),
            what,
        );
        Ok(SetRef {
            family: set.family,
            table: set.table.clone(),
            name: set.name.clone(),
            id: Some(id),
        })
    }

    /// Appends a rule at the end of its chain.
    pub fn add_rule(&mut self, rule: &Rule) -> Result<(), NftError> {
        let what = format!(
            "adding a rule to chain {} in table {}",
            rule.chain, rule.table
        );
        check_name(&what, &rule.table)?;
        check_name(&what, &rule.chain)?;
        let attributes = vec![
            RuleAttribute::Table(rule.table.clone()),
            RuleAttribute::Chain(rule.chain.clone()),
            RuleAttribute::Expressions(rule.exprs.iter().map(Expr::build).collect()),
        ];
        self.push(
            rule.family,
            NfTablesMessage::NewRule(RuleMessage { attributes }),
            NLM_F_CREATE | NLM_F_APPEND,
            what,
        );
        Ok(())
    }

    fn elements(
        &mut self,
        set: &SetRef,
        elems: &[Element],
        delete: bool,
        flags: u16,
        what: &str,
    ) -> Result<(), NftError> {
        check_name(what, &set.table)?;
        check_name(what, &set.name)?;
        if elems.is_empty() {
            return Ok(());
        }
        // Split into messages whose element nest stays below the 16-bit NLA
        // length; they all go in the same transaction.
        let mut chunks: Vec<Vec<ListAttribute<SetElementAttribute>>> = vec![Vec::new()];
        let mut size = 0;
        for e in elems {
            let item = ListAttribute::Element(e.attrs());
            let item_len = item.buffer_len();
            if item_len > MAX_ELEMENTS_NEST {
                return Err(NftError::Invalid {
                    what: what.to_string(),
                    reason: format!("one element takes {item_len} bytes"),
                });
            }
            if size + item_len > MAX_ELEMENTS_NEST {
                chunks.push(Vec::new());
                size = 0;
            }
            size += item_len;
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(item);
            }
        }
        for chunk in chunks {
            let mut attributes = vec![
                SetElementList::Table(set.table.clone()),
                SetElementList::Set(set.name.clone()),
            ];
            if let Some(id) = set.id {
                attributes.push(SetElementList::SetId(id));
            }
            attributes.push(SetElementList::Elements(chunk));
            let msg = SetElementMessage { attributes };
            let msg = if delete {
                NfTablesMessage::DeleteSetElement(msg)
            } else {
                NfTablesMessage::NewSetElement(msg)
            };
            self.push(set.family, msg, flags, what.to_string());
        }
        Ok(())
    }

    /// Adds elements. With Mode::Ensure an existing element is updated: its
    /// timeout and expiration are replaced by the new element's (no timeout:
    /// the element becomes permanent). `what` names the change in errors,
    /// e.g. "adding element 10.89.0.5 to set masq4".
    pub fn add_elements(
        &mut self,
        set: &SetRef,
        elems: &[Element],
        mode: Mode,
        what: &str,
    ) -> Result<(), NftError> {
        self.elements(set, elems, false, mode.flags(), what)
    }

    /// Deletes elements (ENOENT if one is not there). Slow on this kernel,
    /// though not here: a transaction that deletes leaves destroy work that
    /// waits for an RCU grace period (10-20 ms), and closing the socket waits
    /// for it.
    pub fn delete_elements(
        &mut self,
        set: &SetRef,
        elems: &[Element],
        what: &str,
    ) -> Result<(), NftError> {
        self.elements(set, elems, true, 0, what)
    }

    /// The batch as bytes: BEGIN with `seq`, message i with `seq + 1 + i`,
    /// END with `seq + 1 + len`. Also returns where each message starts.
    fn serialize(&self, seq: u32) -> (Vec<u8>, Vec<usize>) {
        let control = |msg: ControlMessage, seq: u32, out: &mut Vec<u8>| {
            let header = NetfilterHeader::new(
                NetfilterProtoFamily::Unspec,
                NFNETLINK_V0,
                NFNL_SUBSYS_NFTABLES,
            );
            frame(NetfilterMessage::new(header, msg), NLM_F_REQUEST, seq, out);
        };
        let mut out = Vec::with_capacity(64 + self.msgs.len() * 128);
        let mut offsets = Vec::with_capacity(self.msgs.len());
        control(ControlMessage::BatchBegin, seq, &mut out);
        for (i, m) in self.msgs.iter().enumerate() {
            offsets.push(out.len());
            let msg_seq = seq.wrapping_add(1 + i as u32);
            frame(
                m.body.clone(),
                NLM_F_REQUEST | NLM_F_ACK | m.flags,
                msg_seq,
                &mut out,
            );
        }
        control(
            ControlMessage::BatchEnd,
            seq.wrapping_add(1 + self.msgs.len() as u32),
            &mut out,
        );
        (out, offsets)
    }

    fn summary(&self) -> String {
        match self.msgs.len() {
            0 => "an empty batch".to_string(),
            1 => self.msgs[0].what.clone(),
            n => format!(
                "{} (and {} more changes in the same batch)",
                self.msgs[0].what,
                n - 1
            ),
        }
    }
}

/// Appends one netlink message (header + payload, 4-byte aligned) to `out`.
fn frame(inner: NetfilterMessage, flags: u16, seq: u32, out: &mut Vec<u8>) {
    let mut msg = NetlinkMessage::from(inner);
    msg.header.flags = flags;
    msg.header.sequence_number = seq;
    msg.finalize();
    let start = out.len();
    let len = msg.buffer_len();
    out.resize(start + len.div_ceil(4) * 4, 0);
    msg.serialize(&mut out[start..start + len]);
}

// ---------------------------------------------------------------------------
// Reading replies

/// One netlink message of a received datagram.
struct RawMsg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn split_datagram(buf: &[u8]) -> Result<Vec<RawMsg<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let len = read_u32(buf, at).ok_or("truncated message header")? as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(format!("message length {len} at offset {at} does not fit"));
        }
        out.push(RawMsg {
            ty: read_u16(buf, at + 4).ok_or("truncated header")?,
            flags: read_u16(buf, at + 6).ok_or("truncated header")?,
            seq: read_u32(buf, at + 8).ok_or("truncated header")?,
            payload: &buf[at + NLMSG_HDRLEN..at + len],
        });
        at += len.div_ceil(4) * 4;
    }
    Ok(out)
}

/// The content of an NLMSG_ERROR: 0 for an ack, else -errno, plus the
/// extended-ack text and offset when the kernel sent them.
#[derive(Debug, PartialEq, Eq)]
struct ErrorReply {
    code: i32,
    msg: Option<String>,
    offset: Option<u32>,
}

fn parse_error(m: &RawMsg<'_>) -> Result<ErrorReply, String> {
    let code = read_u32(m.payload, 0).ok_or("NLMSG_ERROR without an error code")? as i32;
    let mut reply = ErrorReply {
        code,
        msg: None,
        offset: None,
    };
    if m.flags & NLM_F_ACK_TLVS == 0 {
        return Ok(reply);
    }
    // The TLVs follow the echoed request: only its header when the ack was
    // capped (NETLINK_CAP_ACK), else the whole request.
    let echoed = if m.flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len = read_u32(m.payload, 4).ok_or("truncated echoed header")? as usize;
        len.div_ceil(4) * 4
    };
    let mut at = 4 + echoed;
    while at + 4 <= m.payload.len() {
        let len = read_u16(m.payload, at).ok_or("truncated TLV")? as usize;
        let kind = read_u16(m.payload, at + 2).ok_or("truncated TLV")? & 0x3fff;
        if len < 4 || at + len > m.payload.len() {
            return Err(format!("ack TLV length {len} does not fit"));
        }
        let value = &m.payload[at + 4..at + len];
        match kind {
            NLMSGERR_ATTR_MSG => {
                let text = value.split(|b| *b == 0).next().unwrap_or_default();
                reply.msg = Some(String::from_utf8_lossy(text).into_owned());
            }
            NLMSGERR_ATTR_OFFS => reply.offset = read_u32(value, 0),
            _ => {}
        }
        at += len.div_ceil(4) * 4;
    }
    Ok(reply)
}

/// Names the attribute at byte `offset` of a message we sent, as the path of
/// attribute types from the top ("attribute 3/1/1"), for extended-ack offsets.
fn attr_path(msg: &[u8], offset: usize) -> Option<String> {
    let mut path = Vec::new();
    let mut start = NLMSG_HDRLEN + NFGENMSG_LEN;
    let mut end = read_u32(msg, 0)? as usize;
    end = end.min(msg.len());
    'outer: loop {
        let mut at = start;
        while at + 4 <= end {
            let len = read_u16(msg, at)? as usize;
            let kind = read_u16(msg, at + 2)?;
            if len < 4 {
                return None;
            }
            if offset >= at && offset < at + len {
                path.push((kind & 0x3fff).to_string());
                if offset == at || kind & NLA_F_NESTED == 0 {
                    break 'outer;
                }
                start = at + 4;
                end = at + len;
                continue 'outer;
            }
            at += len.div_ceil(4) * 4;
        }
        return None;
    }
    Some(format!("attribute {}", path.join("/")))
}

/// The attributes (type without flags, value) of a buffer of NLAs.
fn nlas(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= buf.len() {
        let len = read_u16(buf, at).ok_or("truncated attribute")? as usize;
        let kind = read_u16(buf, at + 2).ok_or("truncated attribute")? & 0x3fff;
        if len < 4 || at + len > buf.len() {
            return Err(format!("attribute {kind} of length {len} does not fit"));
        }
        out.push((kind, &buf[at + 4..at + len]));
        at += len.div_ceil(4) * 4;
    }
    Ok(out)
}

fn be_u64(value: &[u8]) -> Result<u64, String> {
    Ok(u64::from_be_bytes(
        value.try_into().map_err(|_| "bad 64-bit attribute")?,
    ))
}

fn be_u32(value: &[u8]) -> Result<u32, String> {
    Ok(u32::from_be_bytes(
        value.try_into().map_err(|_| "bad 32-bit attribute")?,
    ))
}

/// NFTA_DATA_VALUE inside a nest (NFTA_SET_ELEM_KEY, _KEY_END, _DATA).
fn data_value(nest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    Ok(nlas(nest)?
        .into_iter()
        .find(|(k, _)| *k == NFTA_DATA_VALUE)
        .map(|(_, v)| v.to_vec()))
}

/// NFTA_SET_ELEM_DATA: a value or a verdict.
fn elem_data(nest: &[u8]) -> Result<Option<Data>, String> {
    for (kind, value) in nlas(nest)? {
        match kind {
            NFTA_DATA_VALUE => return Ok(Some(Data::Value(value.to_vec()))),
            // NFTA_DATA_VERDICT { NFTA_VERDICT_CODE = 1, NFTA_VERDICT_CHAIN = 2 }
            2 => {
                let mut attrs = Vec::new();
                for (k, v) in nlas(value)? {
                    match k {
                        1 => attrs.push(VerdictAttribute::Code(NlVerdict::from(be_u32(v)?))),
                        2 => {
                            let name = v.split(|b| *b == 0).next().unwrap_or_default();
                            attrs.push(VerdictAttribute::Chain(
                                String::from_utf8_lossy(name).into_owned(),
                            ));
                        }
                        _ => {}
                    }
                }
                return Ok(Verdict::from_attrs(&attrs).map(Data::Verdict));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// The elements of one NEWSETELEM message (as a dump returns them). Parsed
/// by hand: it is short, and the crate's parser formats the whole buffer into
/// every error context, which makes big dumps quadratic.
fn parse_elements(payload: &[u8], out: &mut Vec<Element>) -> Result<(), String> {
    let attrs = payload
        .get(NFGENMSG_LEN..)
        .ok_or("message shorter than nfgenmsg")?;
    // NFTA_SET_ELEM_LIST_ELEMENTS = 3, each NFTA_LIST_ELEM = 1
    for (_, list) in nlas(attrs)?.into_iter().filter(|(k, _)| *k == 3) {
        for (_, item) in nlas(list)?
            .into_iter()
            .filter(|(k, _)| *k == NFTA_LIST_ELEM)
        {
            let mut e = Element::default();
            for (kind, value) in nlas(item)? {
                match kind {
                    1 => e.key = data_value(value)?.unwrap_or_default(),
                    2 => e.data = elem_data(value)?,
                    3 => e.interval_end = be_u32(value)? & 1 != 0,
                    4 => e.timeout_ms = Some(be_u64(value)?),
                    5 => e.expiration_ms = Some(be_u64(value)?),
                    10 => e.key_end = data_value(value)?,
                    _ => {}
                }
            }
            out.push(e);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Socket

/// A NETLINK_NETFILTER socket. It stays bound to the network namespace that
/// was current when it was opened, whatever the thread does later.
pub struct NftSocket {
    sock: Socket,
    seq: u32,
    rcvbuf: usize,
    sndbuf: usize,
    buf: Vec<u8>,
}

/// Sets a socket buffer size; false if the kernel refused both variants.
/// (getsockopt then reports the size the kernel really uses: double the
/// request, maybe capped.)
fn set_buf(fd: i32, force: libc::c_int, plain: libc::c_int, size: usize) -> bool {
    let value = size.min(i32::MAX as usize / 2) as libc::c_int;
    let ptr = &value as *const libc::c_int as *const libc::c_void;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: plain setsockopt with a pointer to an int that outlives the call.
    // The *FORCE variant ignores rmem_max/wmem_max (needs CAP_NET_ADMIN,
    // which nf_tables needs anyway); fall back to the capped one.
    let forced = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, force, ptr, len) } == 0;
    forced || unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, plain, ptr, len) } == 0
}

fn get_buf(fd: i32, opt: libc::c_int) -> usize {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a local int of the size we pass.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 && value > 0 {
        value as usize
    } else {
        0
    }
}

impl NftSocket {
    /// Opens the socket in the current network namespace.
    pub fn open() -> Result<Self, NftError> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NftError::Open)?;
        sock.bind_auto().map_err(NftError::Open)?;
        // Acks then carry only the request's header, not the whole request
        // (big batches would otherwise fill the receive buffer), and errors
        // carry the kernel's extended-ack text and offset. Both are optional
        // kernel features: ignore failures.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        let fd = sock.as_raw_fd();
        let rcvbuf = get_buf(fd, libc::SO_RCVBUF);
        let sndbuf = get_buf(fd, libc::SO_SNDBUF);
        // Start the sequence numbers somewhere unlikely to match a stale
        // reply; each batch then takes a fresh range.
        let seq = (std::process::id() << 12) | 1;
        Ok(NftSocket {
            sock,
            seq,
            rcvbuf,
            sndbuf,
            buf: Vec::with_capacity(RECV_BUF_LEN),
        })
    }

    fn take_seq(&mut self, n: usize) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(n as u32);
        first
    }

    /// Grows the socket buffers so the whole batch fits in one sendmsg and
    /// none of its acks is dropped for lack of room.
    fn fit_buffers(&mut self, bytes: usize, acks: usize) {
        let fd = self.sock.as_raw_fd();
        // Netlink refuses a sendmsg larger than sk_sndbuf - 32 (the kernel
        // doubles what we set, so ask for the size itself plus headroom).
        if bytes + 4096 > self.sndbuf {
            let want = bytes + 4096;
            if set_buf(fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, want) {
                self.sndbuf = get_buf(fd, libc::SO_SNDBUF);
            }
        }
        let want = acks * ACK_TRUESIZE + 64 * 1024;
        if want > self.rcvbuf && set_buf(fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, want) {
            self.rcvbuf = get_buf(fd, libc::SO_RCVBUF);
        }
    }

    /// Receives one datagram into self.buf. None: nothing is queued (with
    /// `wait`, nothing arrived in time).
    fn recv(&mut self, wait: Option<Duration>) -> io::Result<Option<()>> {
        if let Some(wait) = wait {
            let mut pfd = libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
            // SAFETY: one pollfd, valid for the duration of the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    return Ok(None);
                }
                return Err(err);
            }
            if rc == 0 {
                return Ok(None);
            }
        }
        self.buf.clear();
        self.buf.reserve(RECV_BUF_LEN);
        match self
            .sock
            .recv(&mut self.buf, libc::MSG_DONTWAIT | libc::MSG_TRUNC)
        {
            Ok(n) if n > self.buf.len() => Err(io::Error::other(format!(
                "a {n}-byte reply did not fit the {}-byte buffer",
                self.buf.len()
            ))),
            Ok(_) => Ok(Some(())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends the whole batch in one sendmsg and reads every ack. The first
    /// refused message (in batch order) becomes the error; the kernel then
    /// has applied nothing of the batch.
    pub fn send(&mut self, batch: &Batch) -> Result<(), NftError> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len();
        let begin = self.take_seq(n + 2);
        let (bytes, offsets) = batch.serialize(begin);
        self.fit_buffers(bytes.len(), n + 2);
        self.sock
            .send_to(&bytes, &SocketAddr::new(0, 0), 0)
            .map_err(|err| NftError::Send {
                what: batch.summary(),
                err,
            })?;

        let mut acked = vec![false; n];
        let mut pending = n;
        // (index in batch or None for the batch itself, reply)
        let mut failures: Vec<(Option<usize>, ErrorReply)> = Vec::new();
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            // The replies are queued before sendmsg returns: normally this
            // only drains them. Wait (bounded) only while acks are missing
            // and nothing failed, which would be a kernel anomaly.
            let wait = if pending > 0 && failures.is_empty() {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                Some(deadline - now)
            } else {
                None
            };
            let got = self.recv(wait).map_err(|err| NftError::Recv {
                what: batch.summary(),
                err,
            })?;
            if got.is_none() {
                if wait.is_none() {
                    break;
                }
                continue;
            }
            let msgs = split_datagram(&self.buf).map_err(|reason| NftError::Malformed {
                what: batch.summary(),
                reason,
            })?;
            for m in msgs {
                let rel = m.seq.wrapping_sub(begin) as usize;
                if m.ty != NLMSG_ERROR || rel > n + 1 {
                    // Not ours (stale) or not an ack (echoes, notifications).
                    continue;
                }
                let reply = parse_error(&m).map_err(|reason| NftError::Malformed {
                    what: batch.summary(),
                    reason,
                })?;
                // seq begin (or end) is the batch itself: commit errors come
                // back against BEGIN, the first message of the datagram.
                let index = if (1..=n).contains(&rel) {
                    Some(rel - 1)
                } else {
                    None
                };
                if reply.code == 0 {
                    if let Some(i) = index.filter(|&i| !acked[i]) {
                        acked[i] = true;
                        pending -= 1;
                    }
                } else {
                    failures.push((index, reply));
                }
            }
        }

        if let Some((index, reply)) = failures
            .into_iter()
            .min_by_key(|(index, _)| index.map_or(usize::MAX, |i| i))
        {
            // No index: the kernel refused the batch as a whole (no
            // permission, or the commit failed), so name the batch.
            let what = match index {
                Some(i) => batch.msgs[i].what.clone(),
                None => batch.summary(),
            };
            let detail = reply.msg.filter(|m| !m.is_empty());
            let attr = index.zip(reply.offset).and_then(|(i, off)| {
                let start = *offsets.get(i)?;
                attr_path(bytes.get(start..)?, off as usize)
            });
            return Err(NftError::Kernel {
                what,
                errno: -reply.code,
                detail,
                attr,
                index,
            });
        }
        if pending > 0 {
            return Err(NftError::MissingAck {
                what: batch.summary(),
                missing: pending,
                total: n,
            });
        }
        Ok(())
    }

    /// Sends one request (not a batch) and collects the payloads of the
    /// answers until the final ack or NLMSG_DONE. Err(Kernel) on refusal.
    fn request(
        &mut self,
        body: NetfilterMessage,
        flags: u16,
        what: &str,
    ) -> Result<Vec<(u16, Vec<u8>)>, NftError> {
        let seq = self.take_seq(1);
        let mut bytes = Vec::new();
        frame(body, NLM_F_REQUEST | NLM_F_ACK | flags, seq, &mut bytes);
        self.sock
            .send_to(&bytes, &SocketAddr::new(0, 0), 0)
            .map_err(|err| NftError::Send {
                what: what.to_string(),
                err,
            })?;
        let mut out = Vec::new();
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(NftError::MissingAck {
                    what: what.to_string(),
                    missing: 1,
                    total: 1,
                });
            }
            // Dumps are produced piecewise as we read, so wait for each part.
            let got = self
                .recv(Some(deadline - now))
                .map_err(|err| NftError::Recv {
                    what: what.to_string(),
                    err,
                })?;
            if got.is_none() {
                continue;
            }
            let msgs = split_datagram(&self.buf).map_err(|reason| NftError::Malformed {
                what: what.to_string(),
                reason,
            })?;
            for m in msgs {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let reply = parse_error(&m).map_err(|reason| NftError::Malformed {
                            what: what.to_string(),
                            reason,
                        })?;
                        if reply.code == 0 {
                            return Ok(out);
                        }
                        let attr = reply.offset.and_then(|off| attr_path(&bytes, off as usize));
                        return Err(NftError::Kernel {
                            what: what.to_string(),
                            errno: -reply.code,
                            detail: reply.msg.filter(|m| !m.is_empty()),
                            attr,
                            index: None,
                        });
                    }
                    ty => out.push((ty, m.payload.to_vec())),
                }
            }
        }
    }

    /// Whether the table exists: one GETTABLE.
    pub fn table_exists(&mut self, family: Family, name: &str) -> Result<bool, NftError> {
        Ok(self.get_table(family, name)?.is_some())
    }

    /// The table's handle, flags and userdata (one GETTABLE); None if absent.
    /// Every base chain of `family` in the namespace (other tools' too): for `doctor`, which
    /// looks for forward chains with a drop policy that would drop container traffic.
    pub fn base_chains(&mut self, family: Family) -> Result<Vec<ListedChain>, NftError> {
        let what = format!("listing {} chains", family.name());
        let body = NetfilterMessage::new(
            nft_header(family),
            NfTablesMessage::GetChain(ChainMessage { attributes: vec![] }),
        );
        let parts = self.request(body, NLM_F_DUMP, &what)?;
        let malformed = |reason: String| NftError::Malformed {
            what: what.clone(),
            reason,
        };
        let mut out = Vec::new();
        // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN
        for (_, payload) in parts
            .iter()
            .filter(|(ty, _)| *ty == (NFNL_SUBSYS_NFTABLES << 8) | 3)
        {
            let attrs = payload
                .get(NFGENMSG_LEN..)
                .ok_or_else(|| malformed("message shorter than nfgenmsg".to_string()))?;
            let mut c = ListedChain {
                family,
                ..Default::default()
            };
            let mut is_base = false;
            for (kind, value) in nlas(attrs).map_err(malformed)? {
                match kind {
                    1 => c.table = nla_string(value),
                    3 => c.name = nla_string(value),
                    4 => {
                        is_base = true;
                        for (k, v) in nlas(value).map_err(malformed)? {
                            match k {
                                1 => c.hook = be_u32(v).map_err(malformed)?,
                                2 => c.priority = be_u32(v).map_err(malformed)? as i32,
                                _ => {}
                            }
                        }
                    }
                    5 => c.policy_accept = be_u32(value).map_err(malformed)? != 0,
                    _ => {}
                }
            }
            if is_base {
                out.push(c);
            }
        }
        Ok(out)
    }

    pub fn get_table(&mut self, family: Family, name: &str) -> Result<Option<TableInfo>, NftError> {
        let what = format!("looking up table {} {}", family.name(), name);
        check_name(&what, name)?;
        let body = NetfilterMessage::new(
            nft_header(family),
            NfTablesMessage::GetTable(TableMessage {
                attributes: vec![TableAttribute::Name(name.to_string())],
            }),
        );
        let parts = match self.request(body, 0, &what) {
            Ok(parts) => parts,
            Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let malformed = |reason: String| NftError::Malformed {
            what: what.clone(),
            reason,
        };
        // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE
        let Some((_, payload)) = parts
            .iter()
            .find(|(ty, _)| *ty == NFNL_SUBSYS_NFTABLES << 8)
        else {
            return Err(malformed("no table in the answer".to_string()));
        };
        let attrs = payload
            .get(NFGENMSG_LEN..)
            .ok_or_else(|| malformed("message shorter than nfgenmsg".to_string()))?;
        let mut info = TableInfo::default();
        for (kind, value) in nlas(attrs).map_err(malformed)? {
            match kind {
                2 => info.flags = be_u32(value).map_err(malformed)?,
                3 => info.chains = be_u32(value).map_err(malformed)?,
                4 => info.handle = be_u64(value).map_err(malformed)?,
                6 => info.userdata = value.to_vec(),
                _ => {}
            }
        }
        Ok(Some(info))
    }

    /// The live elements of a set (the kernel leaves out expired ones).
    /// ENOENT when the table or the set does not exist.
    pub fn list_elements(&mut self, set: &SetRef) -> Result<Vec<Element>, NftError> {
        let what = format!(
            "listing set {} in table {} {}",
            set.name,
            set.family.name(),
            set.table
        );
        check_name(&what, &set.table)?;
        check_name(&what, &set.name)?;
        let body = NetfilterMessage::new(
            nft_header(set.family),
            NfTablesMessage::GetSetElement(SetElementMessage {
                attributes: vec![
                    SetElementList::Table(set.table.clone()),
                    SetElementList::Set(set.name.clone()),
                ],
            }),
        );
        let parts = self.request(body, NLM_F_DUMP, &what)?;
        let mut out = Vec::new();
        for (ty, payload) in parts {
            if ty != NFT_MSG_NEWSETELEM_TYPE {
                continue;
            }
            parse_elements(&payload, &mut out).map_err(|reason| NftError::Malformed {
                what: what.clone(),
                reason,
            })?;
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Test support shared with src/firewall: a private network namespace per test
// thread, observed with the nft binary.

#[cfg(test)]
pub(crate) mod testns {
    use std::process::Command;

    /// Payloads (nfgenmsg + attributes) of a batch's messages, without
    /// BEGIN/END and without the nlmsghdr: what golden tests compare with
    /// `nft --debug=mnl`.
    pub fn payloads(batch: &super::Batch) -> Vec<Vec<u8>> {
        let (bytes, _) = batch.serialize(1);
        let msgs = super::split_datagram(&bytes).expect("own batch parses");
        assert_eq!(msgs.len(), batch.len() + 2);
        msgs[1..msgs.len() - 1]
            .iter()
            .map(|m| m.payload.to_vec())
            .collect()
    }

    pub fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// Skips (returns true) with a note when the test cannot run here.
    pub fn skip(test: &str) -> bool {
        if !is_root() {
            eprintln!("{test}: skipped, needs root (CAP_NET_ADMIN) for network namespaces");
            return true;
        }
        false
    }

    /// The network namespace of the thread running the test.
    pub struct Ns {
        pub path: String,
    }

    impl Ns {
        /// Runs nft inside this namespace; returns stdout, panics on failure.
        pub fn nft(&self, args: &[&str]) -> String {
            let out = Command::new("nsenter")
                .arg(format!("--net={}", self.path))
                .arg("nft")
                .args(args)
                .output()
                .expect("running nsenter nft");
            assert!(
                out.status.success(),
                "nft {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }

        /// Runs `nft -f -` with `input` on stdin.
        pub fn nft_stdin(&self, input: &str) {
            use std::io::Write;
            let mut child = Command::new("nsenter")
                .arg(format!("--net={}", self.path))
                .args(["nft", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("running nsenter nft -f -");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("writing to nft");
            assert!(
                child.wait().expect("waiting for nft").success(),
                "nft -f - failed"
            );
        }

        /// Runs another program (ip, ...) inside this namespace.
        pub fn run(&self, prog: &str, args: &[&str]) {
            let out = Command::new("nsenter")
                .arg(format!("--net={}", self.path))
                .arg(prog)
                .args(args)
                .output()
                .expect("running nsenter");
            assert!(
                out.status.success(),
                "{prog} {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        pub fn nft_json(&self, args: &[&str]) -> serde_json::Value {
            let mut all = vec!["-j"];
            all.extend_from_slice(args);
            serde_json::from_str(&self.nft(&all)).expect("nft -j prints JSON")
        }
    }

    /// Runs `f` on a new thread that first moves into a fresh network
    /// namespace (unshare(CLONE_NEWNET) affects only the calling thread), so
    /// tests run in parallel without seeing each other or the host's
    /// firewall. The namespace goes away with the thread.
    pub fn in_netns<T: Send + 'static>(f: impl FnOnce(&Ns) -> T + Send + 'static) -> T {
        let handle = std::thread::spawn(move || {
            // SAFETY: unshare/gettid have no memory-safety preconditions.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            let tid = unsafe { libc::gettid() };
            let ns = Ns {
                path: format!("/proc/{}/task/{}/ns/net", std::process::id(), tid),
            };
            f(&ns)
        });
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testns::{in_netns, payloads, skip};
    use super::*;

    /// The value of a top-level attribute of a message payload (after the
    /// 4-byte nfgenmsg).
    fn top_attr(payload: &[u8], kind: u16) -> Option<Vec<u8>> {
        let mut at = NFGENMSG_LEN;
        while at + 4 <= payload.len() {
            let len = read_u16(payload, at)? as usize;
            if read_u16(payload, at + 2)? & 0x3fff == kind {
                return Some(payload[at + 4..at + len].to_vec());
            }
            at += len.div_ceil(4) * 4;
        }
        None
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Golden bytes below are the payloads printed by `nft --debug=mnl -f` for
    // this ruleset (converted with /tmp/nftdev/mnl2hex.py):
    //   table inet t {
    //     map pf { type inet_proto . inet_service : ipv4_addr . inet_service; }
    //     map vm { type ifname : verdict; }
    //     chain c { type filter hook forward priority 0; iifname vmap @vm; }
    //     chain pre { type nat hook prerouting priority dstnat;
    //                 dnat ip to meta l4proto . th dport map @pf; }
    //   }
    const GOLDEN_PF_SET: &str = "01000000060001007400000007000200706600000800030000000008080004000000030d080005000000000808000600000001cd080007000000000808000a00000000012a000d00000400000000010400000000030800040d0000000100040800040d00000001000604000000000000";
    const GOLDEN_VM_SET_NO_UDATA: &str = "01000000060001007400000007000200766d000008000300000000080800040000000029080005000000001008000600ffffff00080007000000000008000a0000000002";
    const GOLDEN_VMAP_RULE: &str = "01000000060001007400000006000200630000005c00048024000180090001006d657461000000001400028008000200000000060800010000000001340001800b0001006c6f6f6b75700000240002800800020000000001080003000000000007000100766d00000800040000000002";
    const GOLDEN_DNAT_RULE: &str = "0100000006000100740000000800020070726500c000048024000180090001006d657461000000001400028008000200000000100800010000000001340001800c0001007061796c6f616400240002800800010000000009080002000000000208000300000000020800040000000002340001800b0001006c6f6f6b7570000024000280080002000000000108000300000000010700010070660000080004000000000130000180080001006e617400240002800800010000000001080002000000000208000300000000010800050000000009";
    const GOLDEN_PRE_CHAIN: &str = "0100000006000100740000000800030070726500080007006e61740014000480080001000000000008000200ffffff9c";
    // nft add element inet t pf { tcp . 8080 : 10.89.0.5 . 80 } (nft also
    // sends its own cached set id, which we leave out: not needed by name).
    const GOLDEN_PF_ELEM_ELEMENTS: &str =
        "2800038024000180100001800c000100060000001f900000100002800c0001000a59000500500000";

    fn pf_vm_batch() -> (Batch, SetRef, SetRef) {
        let mut b = Batch::new();
        // Copy nft's userdata (typeof info) so the whole message compares.
        let pf_udata = top_attr(&hex(GOLDEN_PF_SET), 13).expect("udata in golden");
        let pf = b
            .add_set(
                &SetDef::new(
                    Family::Inet,
                    "t",
                    "pf",
                    datatype::concat(&[datatype::INET_PROTO, datatype::INET_SERVICE]),
                    datatype::concat_len(&[1, 2]),
                )
                .flags(set_flags::MAP)
                .map(
                    datatype::concat(&[datatype::IPV4_ADDR, datatype::INET_SERVICE]),
                    datatype::concat_len(&[4, 2]),
                )
                .userdata(pf_udata),
                Mode::Ensure,
            )
            .unwrap();
        let vm = b
            .add_set(
                &SetDef::new(Family::Inet, "t", "vm", datatype::IFNAME, 16).verdict_map(),
                Mode::Ensure,
            )
            .unwrap();
        (b, pf, vm)
    }

    #[test]
    fn map_definitions_match_nft() {
        let (b, _, _) = pf_vm_batch();
        let p = payloads(&b);
        assert_eq!(p[0], hex(GOLDEN_PF_SET));
        assert_eq!(p[1], hex(GOLDEN_VM_SET_NO_UDATA));
    }

    #[test]
    fn map_rules_match_nft() {
        let (mut b, pf, vm) = pf_vm_batch();
        // nft's set ids in that batch were 1 (pf) and 2 (vm), as ours are.
        b.add_rule(&Rule::new(
            Family::Inet,
            "t",
            "c",
            vec![
                Expr::Meta {
                    key: MetaKey::Iifname,
                    dreg: Register::Reg1,
                },
                Expr::map(&vm, Register::Reg1, Register::Verdict),
            ],
        ))
        .unwrap();
        // The golden chain has no policy statement, so no policy attribute.
        let mut pre = Chain::base(
            Family::Inet,
            "t",
            "pre",
            ChainType::Nat,
            Hook::Prerouting,
            priority::DSTNAT,
            Policy::Accept,
        );
        if let Some(base) = pre.base.as_mut() {
            base.policy = None;
        }
        b.add_chain(&pre, Mode::Ensure).unwrap();
        b.add_rule(&Rule::new(
            Family::Inet,
            "t",
            "pre",
            vec![
                Expr::Meta {
                    key: MetaKey::L4Proto,
                    dreg: Register::Reg1,
                },
                Expr::Payload {
                    base: PayloadBase::Transport,
                    offset: 2,
                    len: 2,
                    dreg: Register::Reg32_01,
                },
                Expr::map(&pf, Register::Reg1, Register::Reg1),
                Expr::Nat {
                    kind: NatKind::Dnat,
                    family: Family::Ip,
                    addr_min: Some(Register::Reg1),
                    addr_max: None,
                    proto_min: Some(Register::Reg32_01),
                    proto_max: None,
                    flags: 0,
                },
            ],
        ))
        .unwrap();
        let p = payloads(&b);
        assert_eq!(p[2], hex(GOLDEN_VMAP_RULE));
        assert_eq!(p[3], hex(GOLDEN_PRE_CHAIN));
        assert_eq!(p[4], hex(GOLDEN_DNAT_RULE));
    }

    #[test]
    fn map_element_matches_nft() {
        let mut b = Batch::new();
        let pf = SetRef::named(Family::Inet, "t", "pf");
        let key = [vec![6, 0, 0, 0], 8080u16.to_be_bytes().to_vec(), vec![0, 0]].concat();
        let data = [vec![10, 89, 0, 5], 80u16.to_be_bytes().to_vec(), vec![0, 0]].concat();
        b.add_elements(
            &pf,
            &[Element::new(key).data(Data::Value(data))],
            Mode::Ensure,
            "x",
        )
        .unwrap();
        let p = payloads(&b);
        let head = hex("0100000006000100740000000700020070660000");
        assert_eq!(p[0], [head, hex(GOLDEN_PF_ELEM_ELEMENTS)].concat());
    }

    #[test]
    fn verdict_element_encoding() {
        // nft add element inet t vm { "br0" : accept }
        let golden = [
            "01000000",                                 // nfgenmsg: inet
            "0600010074000000",                         // NFTA_SET_ELEM_LIST_TABLE "t"
            "07000200766d0000",                         // NFTA_SET_ELEM_LIST_SET "vm"
            "30000380",                                 // NFTA_SET_ELEM_LIST_ELEMENTS
            "2c000180",                                 //   NFTA_LIST_ELEM
            "18000180",                                 //     NFTA_SET_ELEM_KEY
            "1400010062723000000000000000000000000000", // NFTA_DATA_VALUE "br0"
            "10000280",                                 //     NFTA_SET_ELEM_DATA
            "0c000280",                                 //       NFTA_DATA_VERDICT
            "0800010000000001",                         //         NFTA_VERDICT_CODE accept
        ]
        .concat();
        let golden = golden.as_str();
        let mut b = Batch::new();
        let vm = SetRef::named(Family::Inet, "t", "vm");
        let mut key = b"br0".to_vec();
        key.resize(16, 0);
        b.add_elements(
            &vm,
            &[Element::new(key).data(Data::Verdict(Verdict::Accept))],
            Mode::Ensure,
            "x",
        )
        .unwrap();
        // nft's own dump of that message (with its set id removed):
        // elements nest: elem { key { value "br0"... }, data { verdict { code 1 } } }
        assert_eq!(payloads(&b)[0], hex(golden));
    }

    #[test]
    fn batch_framing() {
        let mut b = Batch::new();
        b.add_table(&Table::new(Family::Inet, "x"), Mode::Create)
            .unwrap();
        b.delete_table(Family::Inet, "x").unwrap();
        let (bytes, offsets) = b.serialize(100);
        let msgs = split_datagram(&bytes).unwrap();
        assert_eq!(msgs.len(), 4);
        // BEGIN/END: NFNL_MSG_BATCH_BEGIN/END in subsystem 0, res_id
        // NFNL_SUBSYS_NFTABLES (big endian), family unspec.
        assert_eq!(
            (msgs[0].ty, msgs[0].seq, msgs[0].payload),
            (16, 100, &[0u8, 0, 0, 10][..])
        );
        assert_eq!(
            (msgs[3].ty, msgs[3].seq, msgs[3].payload),
            (17, 103, &[0u8, 0, 0, 10][..])
        );
        // NEWTABLE (10 << 8 | 0) with REQUEST|ACK|CREATE|EXCL, DELTABLE with REQUEST|ACK.
        assert_eq!(
            (msgs[1].ty, msgs[1].flags, msgs[1].seq),
            (0x0a00, 0x1 | 0x4 | 0x400 | 0x200, 101)
        );
        assert_eq!((msgs[2].ty, msgs[2].flags, msgs[2].seq), (0x0a02, 0x5, 102));
        assert_eq!(offsets, vec![20, 20 + 36]);
    }

    #[test]
    fn names_are_checked() {
        let mut b = Batch::new();
        assert!(matches!(
            b.add_table(&Table::new(Family::Inet, "a\0b"), Mode::Create),
            Err(NftError::Invalid { .. })
        ));
        assert!(b
            .add_table(&Table::new(Family::Inet, ""), Mode::Create)
            .is_err());
        assert!(b.is_empty());
    }

    #[test]
    fn big_element_lists_are_split() {
        let mut b = Batch::new();
        let set = SetRef::named(Family::Inet, "t", "s");
        let elems: Vec<Element> = (0..10_000u32)
            .map(|i| Element::new(i.to_be_bytes().to_vec()))
            .collect();
        b.add_elements(&set, &elems, Mode::Ensure, "adding many")
            .unwrap();
        assert!(b.len() > 1);
        let (bytes, _) = b.serialize(1);
        // Every message parses back and all elements are there.
        let mut got = Vec::new();
        for m in split_datagram(&bytes).unwrap() {
            if m.ty == NFT_MSG_NEWSETELEM_TYPE {
                parse_elements(m.payload, &mut got).unwrap();
            }
        }
        let count = got.len();
        assert_eq!(got[9_999], Element::new(9_999u32.to_be_bytes().to_vec()));
        assert_eq!(count, 10_000);
    }

    fn error_datagram(seq: u32, code: i32, flags: u16, tlvs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&code.to_ne_bytes());
        // echoed request header (capped)
        payload.extend_from_slice(&[20, 0, 0, 0, 0, 10, 5, 0]);
        payload.extend_from_slice(&seq.to_ne_bytes());
        payload.extend_from_slice(&[0, 0, 0, 0]);
        for (kind, value) in tlvs {
            put_nla(&mut payload, *kind, value);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&payload);
        out
    }

    #[test]
    fn parses_acks_and_extended_errors() {
        let ack = error_datagram(7, 0, NLM_F_CAPPED, &[]);
        let msgs = split_datagram(&ack).unwrap();
        assert_eq!(
            parse_error(&msgs[0]).unwrap(),
            ErrorReply {
                code: 0,
                msg: None,
                offset: None
            }
        );

        let err = error_datagram(
            8,
            -libc::EINVAL,
            NLM_F_CAPPED | NLM_F_ACK_TLVS,
            &[
                (NLMSGERR_ATTR_MSG, b"bad thing\0".to_vec()),
                (NLMSGERR_ATTR_OFFS, 44u32.to_ne_bytes().to_vec()),
            ],
        );
        let msgs = split_datagram(&err).unwrap();
        assert_eq!(
            parse_error(&msgs[0]).unwrap(),
            ErrorReply {
                code: -libc::EINVAL,
                msg: Some("bad thing".into()),
                offset: Some(44)
            }
        );
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        assert!(split_datagram(&[1, 2, 3]).is_err());
        assert!(split_datagram(&[200, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let short = [16u8, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        let msgs = split_datagram(&short).unwrap();
        assert!(parse_error(&msgs[0]).is_err());
        // TLV flag set but a TLV length that runs past the end.
        let mut bad = error_datagram(1, -1, NLM_F_CAPPED | NLM_F_ACK_TLVS, &[(1, b"x".to_vec())]);
        let len = bad.len();
        bad[len - 8] = 200;
        let msgs = split_datagram(&bad).unwrap();
        assert!(parse_error(&msgs[0]).is_err());
    }

    #[test]
    fn attribute_paths_for_extended_acks() {
        let mut b = Batch::new();
        b.add_table(&Table::new(Family::Inet, "nethook"), Mode::Create)
            .unwrap();
        let (bytes, offsets) = b.serialize(1);
        let msg = &bytes[offsets[0]..];
        // 16 (nlmsghdr) + 4 (nfgenmsg): NFTA_TABLE_NAME; +12: NFTA_TABLE_FLAGS.
        assert_eq!(attr_path(msg, 20).unwrap(), "attribute 1");
        assert_eq!(attr_path(msg, 32).unwrap(), "attribute 2");
        assert!(attr_path(msg, 4000).is_none());
    }

    #[test]
    fn error_messages_are_one_line_with_a_hint() {
        let e = NftError::Kernel {
            what: "adding element 10.89.0.5 to set masq4".into(),
            errno: libc::EEXIST,
            detail: None,
            attr: None,
            index: Some(0),
        };
        assert_eq!(
            e.to_string(),
            "nftables: adding element 10.89.0.5 to set masq4 failed: File exists (EEXIST); run 'nethook restore'"
        );
        let e = NftError::Kernel {
            what: "x".into(),
            errno: libc::EPERM,
            detail: None,
            attr: None,
            index: None,
        };
        assert!(
            e.to_string()
                .contains("(EPERM); nethook needs CAP_NET_ADMIN"),
            "{e}"
        );
    }

    #[test]
    fn table_comment_round_trips() {
        let u = table_comment_userdata("nethook layout 2");
        // nft: table inet t { comment "nethook layout 2" } sends this.
        assert_eq!(u, hex("00116e6574686f6f6b206c61796f7574203200"));
        assert_eq!(table_comment(&u).as_deref(), Some("nethook layout 2"));
        // Another TLV first, a truncated one, none.
        let mut other = vec![5, 2, 9, 9];
        other.extend_from_slice(&u);
        assert_eq!(table_comment(&other).as_deref(), Some("nethook layout 2"));
        assert_eq!(table_comment(&u[..5]), None);
        assert_eq!(table_comment(&[]), None);
        let mut b = Batch::new();
        b.add_table(
            &Table::new(Family::Inet, "nethook").userdata(u),
            Mode::Create,
        )
        .unwrap();
        // nft --debug=mnl of: table inet nethook { comment "nethook layout 2" }
        assert_eq!(
            payloads(&b)[0],
            hex("010000000c0001006e6574686f6f6b0008000200000000001700060000116e6574686f6f6b206c61796f757420320000")
        );
    }

    // ---- root tests, each in its own network namespace ----

    #[test]
    fn get_table_reads_handle_and_comment_and_delete_by_handle_is_exact() {
        if skip("get_table_reads_handle_and_comment_and_delete_by_handle_is_exact") {
            return;
        }
        in_netns(|ns| {
            let mut s = NftSocket::open().unwrap();
            assert_eq!(s.get_table(Family::Inet, "t").unwrap(), None);
            let create = |s: &mut NftSocket| {
                let mut b = Batch::new();
                b.add_table(
                    &Table::new(Family::Inet, "t").userdata(table_comment_userdata("hello")),
                    Mode::Create,
                )
                .unwrap();
                b.add_chain(&Chain::regular(Family::Inet, "t", "c"), Mode::Create)
                    .unwrap();
                s.send(&b).unwrap();
                s.get_table(Family::Inet, "t").unwrap().unwrap()
            };
            let first = create(&mut s);
            assert_eq!(table_comment(&first.userdata).as_deref(), Some("hello"));
            assert_eq!(first.chains, 1);
            assert!(ns
                .nft(&["list", "table", "inet", "t"])
                .contains("comment \"hello\""));
            // Replaced in one batch: delete by handle, create again.
            let mut b = Batch::new();
            b.delete_table_handle(Family::Inet, "t", first.handle)
                .unwrap();
            b.add_table(&Table::new(Family::Inet, "t"), Mode::Create)
                .unwrap();
            s.send(&b).unwrap();
            let second = s.get_table(Family::Inet, "t").unwrap().unwrap();
            assert_ne!(second.handle, first.handle);
            assert!(second.userdata.is_empty());
            // The old handle no longer names a table, though "t" exists.
            let mut b = Batch::new();
            b.delete_table_handle(Family::Inet, "t", first.handle)
                .unwrap();
            let err = s.send(&b).unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENOENT));
            assert_eq!(err.failed_index(), Some(0));
            assert!(s.table_exists(Family::Inet, "t").unwrap());
        });
    }

    #[test]
    fn table_exists_and_errors_name_the_failing_message() {
        if skip("table_exists_and_errors_name_the_failing_message") {
            return;
        }
        in_netns(|ns| {
            let mut s = NftSocket::open().unwrap();
            assert!(!s.table_exists(Family::Inet, "t").unwrap());
            let mut b = Batch::new();
            b.add_table(&Table::new(Family::Inet, "t"), Mode::Create)
                .unwrap();
            s.send(&b).unwrap();
            assert!(s.table_exists(Family::Inet, "t").unwrap());
            assert!(!s.table_exists(Family::Ip, "t").unwrap());

            // Second message refers to a set that does not exist: the whole
            // batch fails, the error names message 1, and the chain of
            // message 0 is not created.
            let mut b = Batch::new();
            b.add_chain(&Chain::regular(Family::Inet, "t", "c1"), Mode::Create)
                .unwrap();
            b.add_elements(
                &SetRef::named(Family::Inet, "t", "nope"),
                &[Element::new(vec![1, 2, 3, 4])],
                Mode::Ensure,
                "adding element 1.2.3.4 to set nope",
            )
            .unwrap();
            let err = s.send(&b).unwrap_err();
            assert_eq!(err.failed_index(), Some(1), "{err}");
            assert_eq!(err.errno(), Some(libc::ENOENT));
            eprintln!("extended ack points at {:?}", err.attr_path());
            assert!(err.to_string().starts_with("nftables: adding element 1.2.3.4 to set nope failed: No such file or directory (ENOENT)"), "{err}");
            assert!(!ns.nft(&["list", "table", "inet", "t"]).contains("c1"));
        });
    }

    #[test]
    fn maps_and_verdict_maps_work_in_the_kernel() {
        if skip("maps_and_verdict_maps_work_in_the_kernel") {
            return;
        }
        in_netns(|ns| {
            let mut s = NftSocket::open().unwrap();
            let mut b = Batch::new();
            b.add_table(&Table::new(Family::Inet, "t"), Mode::Create)
                .unwrap();
            b.add_chain(
                &Chain::base(
                    Family::Inet,
                    "t",
                    "c",
                    ChainType::Filter,
                    Hook::Forward,
                    0,
                    Policy::Accept,
                ),
                Mode::Create,
            )
            .unwrap();
            b.add_chain(
                &Chain::base(
                    Family::Inet,
                    "t",
                    "pre",
                    ChainType::Nat,
                    Hook::Prerouting,
                    priority::DSTNAT,
                    Policy::Accept,
                ),
                Mode::Create,
            )
            .unwrap();
            b.add_chain(&Chain::regular(Family::Inet, "t", "j"), Mode::Create)
                .unwrap();
            let pf = b
                .add_set(
                    &SetDef::new(
                        Family::Inet,
                        "t",
                        "pf",
                        datatype::concat(&[datatype::INET_PROTO, datatype::INET_SERVICE]),
                        datatype::concat_len(&[1, 2]),
                    )
                    .map(
                        datatype::concat(&[datatype::IPV4_ADDR, datatype::INET_SERVICE]),
                        datatype::concat_len(&[4, 2]),
                    )
                    .flags(set_flags::TIMEOUT),
                    Mode::Create,
                )
                .unwrap();
            let vm = b
                .add_set(
                    &SetDef::new(Family::Inet, "t", "vm", datatype::IFNAME, 16)
                        .verdict_map()
                        .userdata(set_userdata(ByteOrder::Host, None)),
                    Mode::Create,
                )
                .unwrap();
            // A concatenated interval set needs the field lengths.
            b.add_set(
                &SetDef::new(
                    Family::Inet,
                    "t",
                    "ranges",
                    datatype::concat(&[datatype::IPV4_ADDR, datatype::INET_SERVICE]),
                    datatype::concat_len(&[4, 2]),
                )
                .flags(set_flags::INTERVAL | set_flags::CONCAT)
                .concat_lens(&[4, 2]),
                Mode::Create,
            )
            .unwrap();
            b.add_rule(&Rule::new(
                Family::Inet,
                "t",
                "c",
                vec![
                    Expr::Meta {
                        key: MetaKey::Iifname,
                        dreg: Register::Reg1,
                    },
                    Expr::map(&vm, Register::Reg1, Register::Verdict),
                ],
            ))
            .unwrap();
            b.add_rule(&Rule::new(
                Family::Inet,
                "t",
                "pre",
                vec![
                    Expr::Meta {
                        key: MetaKey::L4Proto,
                        dreg: Register::Reg1,
                    },
                    Expr::Payload {
                        base: PayloadBase::Transport,
                        offset: 2,
                        len: 2,
                        dreg: Register::Reg32_01,
                    },
                    Expr::map(&pf, Register::Reg1, Register::Reg1),
                    Expr::Nat {
                        kind: NatKind::Dnat,
                        family: Family::Ip,
                        addr_min: Some(Register::Reg1),
                        addr_max: None,
                        proto_min: Some(Register::Reg32_01),
                        proto_max: None,
                        flags: 0,
                    },
                ],
            ))
            .unwrap();
            let key = [vec![6, 0, 0, 0], 8080u16.to_be_bytes().to_vec(), vec![0, 0]].concat();
            let data = [vec![10, 89, 0, 5], 80u16.to_be_bytes().to_vec(), vec![0, 0]].concat();
            b.add_elements(
                &pf,
                &[Element::new(key.clone()).data(Data::Value(data.clone()))],
                Mode::Ensure,
                "pf element",
            )
            .unwrap();
            let mut br = b"br0".to_vec();
            br.resize(16, 0);
            let mut br1 = b"br1".to_vec();
            br1.resize(16, 0);
            b.add_elements(
                &vm,
                &[
                    Element::new(br.clone()).data(Data::Verdict(Verdict::Accept)),
                    Element::new(br1.clone()).data(Data::Verdict(Verdict::Jump("j".into()))),
                ],
                Mode::Ensure,
                "vm elements",
            )
            .unwrap();
            s.send(&b).unwrap();

            let text = ns.nft(&["list", "table", "inet", "t"]);
            assert!(
                text.contains("type inet_proto . inet_service : ipv4_addr . inet_service"),
                "{text}"
            );
            assert!(text.contains("tcp . 8080 : 10.89.0.5 . 80"), "{text}");
            assert!(text.contains("type ifname : verdict"), "{text}");
            assert!(text.contains("\"br0\" : accept"), "{text}");
            assert!(text.contains("\"br1\" : jump j"), "{text}");
            assert!(text.contains("iifname vmap @vm"), "{text}");
            assert!(
                text.contains("dnat ip to meta l4proto . th dport map @pf"),
                "{text}"
            );

            // Read back through the dump.
            let got = s
                .list_elements(&SetRef::named(Family::Inet, "t", "vm"))
                .unwrap();
            assert_eq!(got.len(), 2);
            assert!(got
                .iter()
                .any(|e| e.key == br && e.data == Some(Data::Verdict(Verdict::Accept))));
            assert!(got
                .iter()
                .any(|e| e.key == br1 && e.data == Some(Data::Verdict(Verdict::Jump("j".into())))));
            let got = s
                .list_elements(&SetRef::named(Family::Inet, "t", "pf"))
                .unwrap();
            assert_eq!(got, vec![Element::new(key).data(Data::Value(data))]);
            let err = s
                .list_elements(&SetRef::named(Family::Inet, "t", "nope"))
                .unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENOENT));
        });
    }

    #[test]
    fn large_batch_gets_every_ack() {
        if skip("large_batch_gets_every_ack") {
            return;
        }
        in_netns(|ns| {
            let mut s = NftSocket::open().unwrap();
            let mut b = Batch::new();
            b.add_table(&Table::new(Family::Inet, "t"), Mode::Create)
                .unwrap();
            let set = b
                .add_set(
                    &SetDef::new(Family::Inet, "t", "s", datatype::IPV4_ADDR, 4),
                    Mode::Create,
                )
                .unwrap();
            // One message per element: 5000 acks, far more than the default
            // receive buffer holds.
            for i in 0..5000u32 {
                let ip = 0x0a00_0000 + i;
                b.add_elements(
                    &set,
                    &[Element::new(ip.to_be_bytes().to_vec())],
                    Mode::Ensure,
                    "e",
                )
                .unwrap();
            }
            s.send(&b).unwrap();
            let got = s
                .list_elements(&SetRef::named(Family::Inet, "t", "s"))
                .unwrap();
            assert_eq!(got.len(), 5000);
            assert!(ns
                .nft(&["list", "set", "inet", "t", "s"])
                .contains("10.0.19.135"));
        });
    }
}
