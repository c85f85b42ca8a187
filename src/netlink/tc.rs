//! Root qdiscs through rtnetlink: a token bucket filter (tbf) as a bandwidth limit, the way the
//! CNI bandwidth plugin does it. A root qdisc shapes what a link *sends*: on a veth pair the
//! host side's egress is the container's ingress, the container side's egress its egress.
//!
//! netlink-packet-route has no typed tbf options, so TCA_OPTIONS is built here from raw NLAs
//! with the layouts of linux/pkt_sched.h, checked against net/sched/sch_tbf.c (tbf_change).

use super::route::{errno, kernel, RouteSocket};
use crate::error::{Error, Result};
use crate::tuning::Rate;
use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcHeader, TcMessage, TcOption};
use netlink_packet_route::RouteNetlinkMessage;

// linux/pkt_sched.h, enum TCA_TBF_*.
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
/// TC_LINKLAYER_ETHERNET: with a link layer given, the kernel does not look for a rate table
/// (TCA_TBF_RTAB) to guess it from; it computes transmit times itself (psched_ratecfg).
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// The Ethernet header the qdisc counts in each packet's length on top of the MTU.
const ETH_HLEN: u32 = 14;
/// psched ticks are 64 ns (PSCHED_SHIFT 6 in include/net/pkt_sched.h since 2.6.31; what
/// /proc/net/psched's second field, 0x40, says and what tc reads from it).
const PSCHED_SHIFT: u32 = 6;
/// The default burst holds this many seconds' worth of the rate: 1/100 s, the tick of the
/// slowest kernel configuration (HZ=100), tc-tbf(8)'s rule "burst at least rate/HZ".
const BURST_HZ: u64 = 100;
/// The queue a tbf keeps, as time at the rate: the CNI bandwidth plugin's latencyInMillis.
pub const DEFAULT_LATENCY_MS: u32 = 25;
const MAX_LATENCY_MS: u32 = 10_000;

/// The numbers of one tbf, computed from the request and the link's MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TbfParams {
    pub rate_bytes: u64,
    pub burst: u32,
    pub limit: u32,
    /// The burst as transmit time at the rate, in psched ticks (old kernels read only this).
    pub buffer_ticks: u32,
}

fn sat_u32(v: u128) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Compute a tbf like `tc qdisc replace ... tbf rate R burst B latency L` does.
pub(crate) fn tbf_params(
    rate: Rate,
    burst: Option<u32>,
    latency_ms: u32,
    mtu: u32,
) -> Result<TbfParams> {
    let what = || format!("bandwidth limit {rate}");
    let rate_bytes = rate.bytes_per_sec();
    if rate_bytes == 0 {
        return Err(Error::invalid(
            what(),
            "is below one byte per second",
            "give at least 8kbit",
        ));
    }
    if latency_ms == 0 || latency_ms > MAX_LATENCY_MS {
        return Err(Error::invalid(
            what(),
            format!("latency {latency_ms} ms is outside 1-{MAX_LATENCY_MS}"),
            format!("use {DEFAULT_LATENCY_MS} ms, as the CNI bandwidth plugin does"),
        ));
    }
    // A packet bigger than the bucket is dropped by tbf (GSO packets are split first), so the
    // bucket holds at least one full frame.
    let frame = mtu.saturating_add(ETH_HLEN);
    let burst = match burst {
        Some(b) if b < frame => {
            return Err(Error::invalid(
                what(),
                format!("burst {b} bytes is smaller than one full frame ({frame} bytes)"),
                format!("give a burst of at least {frame} bytes, or none for the default"),
            ))
        }
        Some(b) => b,
        None => sat_u32(u128::from(rate_bytes.div_ceil(BURST_HZ))).max(frame),
    };
    // tc's "latency": the queue holds what the rate sends in that time, plus the bucket.
    let limit = sat_u32(u128::from(rate_bytes) * u128::from(latency_ms) / 1000 + u128::from(burst));
    let buffer_ns = u128::from(burst) * 1_000_000_000 / u128::from(rate_bytes);
    Ok(TbfParams {
        rate_bytes,
        burst,
        limit,
        buffer_ticks: sat_u32(buffer_ns >> PSCHED_SHIFT),
    })
}

/// `struct tc_ratespec` (12 bytes): cell_log u8, linklayer u8, overhead u16, cell_align i16,
/// mpu u16, rate u32.
fn ratespec(rate_bytes: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[1] = TC_LINKLAYER_ETHERNET;
    // A rate of 2^32 bytes/s or more goes in TCA_TBF_RATE64; the kernel takes the larger.
    let r32 = u32::try_from(rate_bytes).unwrap_or(u32::MAX);
    b[8..12].copy_from_slice(&r32.to_ne_bytes());
    b
}

/// TCA_OPTIONS of a tbf: TCA_TBF_PARMS (`struct tc_tbf_qopt`: rate, peakrate, limit, buffer,
/// mtu; 36 bytes, required by tbf_change), TCA_TBF_BURST (the kernel then derives the buffer
/// from the bytes itself, with no tick rounding) and TCA_TBF_RATE64 when the rate needs it.
/// No peak rate: its 12 bytes and the mtu stay 0.
pub(crate) fn tbf_options(p: &TbfParams) -> Vec<TcOption> {
    let mut parms = Vec::with_capacity(36);
    parms.extend_from_slice(&ratespec(p.rate_bytes));
    parms.extend_from_slice(&[0u8; 12]);
    parms.extend_from_slice(&p.limit.to_ne_bytes());
    parms.extend_from_slice(&p.buffer_ticks.to_ne_bytes());
    parms.extend_from_slice(&0u32.to_ne_bytes());
    let mut opts = vec![
        TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, parms)),
        TcOption::Other(DefaultNla::new(
            TCA_TBF_BURST,
            p.burst.to_ne_bytes().to_vec(),
        )),
    ];
    if p.rate_bytes > u64::from(u32::MAX) {
        opts.push(TcOption::Other(DefaultNla::new(
            TCA_TBF_RATE64,
            p.rate_bytes.to_ne_bytes().to_vec(),
        )));
    }
    opts
}

/// The RTM_NEWQDISC body: root of link `index`, handle left to the kernel. With handle 0 a
/// replace changes a tbf that is there and swaps any other root qdisc for a new tbf
/// (tc_modify_qdisc), so calling again with a new rate just works.
pub(crate) fn tbf_message(index: i32, p: &TbfParams) -> TcMessage {
    let header = TcHeader {
        index,
        handle: TcHandle::UNSPEC,
        parent: TcHandle::ROOT,
        ..Default::default()
    };
    TcMessage::from_parts(
        header,
        vec![
            TcAttribute::Kind("tbf".to_string()),
            TcAttribute::Options(tbf_options(p)),
        ],
    )
}

fn link_index(index: u32) -> Result<i32> {
    i32::try_from(index).map_err(|_| {
        Error::invalid(
            format!("link index {index}"),
            "is out of range",
            "give the index of an existing link",
        )
    })
}

impl RouteSocket {
    /// Replace the root qdisc of link `index` with a tbf of `rate`. `burst_bytes` None picks
    /// 10 ms at the rate but at least one full frame; `latency_ms` bounds the queue
    /// ([`DEFAULT_LATENCY_MS`] is the CNI bandwidth plugin's value).
    pub fn set_tbf(
        &self,
        index: u32,
        rate: Rate,
        burst_bytes: Option<u32>,
        latency_ms: u32,
    ) -> Result<()> {
        let idx = link_index(index)?;
        let mtu = self.link_mtu(index)?;
        let p = tbf_params(rate, burst_bytes, latency_ms, mtu)?;
        let msg = tbf_message(idx, &p);
        self.tc_request(
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map_err(|e| {
            if errno(&e) == Some(libc::ENOENT) {
                Error::kernel(
                    format!("setting bandwidth limit {rate} on link {index}"),
                    "the kernel has no tbf qdisc",
                    "load the sch_tbf module (modprobe sch_tbf)",
                )
            } else {
                kernel(
                    format!("setting bandwidth limit {rate} on link {index}"),
                    &e,
                )
            }
        })
    }

    /// Delete the root qdisc of link `index`, back to the kernel's default. No qdisc of ours
    /// there, or no link any more, is success (teardown runs this on links that may be gone).
    pub fn clear_root_qdisc(&self, index: u32) -> Result<()> {
        let idx = link_index(index)?;
        let header = TcHeader {
            index: idx,
            handle: TcHandle::UNSPEC,
            parent: TcHandle::ROOT,
            ..Default::default()
        };
        let msg = TcMessage::from_parts(header, vec![]);
        match self.tc_request(RouteNetlinkMessage::DelQueueDiscipline(msg), 0) {
            Ok(()) => Ok(()),
            // ENOENT: the root is the default qdisc (handle 0), which cannot be deleted.
            Err(e) if matches!(errno(&e), Some(libc::ENOENT) | Some(libc::ENODEV)) => Ok(()),
            Err(e) => Err(kernel(
                format!("removing the root qdisc of link {index}"),
                &e,
            )),
        }
    }

    fn link_mtu(&self, index: u32) -> Result<u32> {
        let req = self.handle.link().get().match_index(index).execute();
        let res = self.run(async move {
            let mut s = Box::pin(req);
            s.try_next().await
        });
        let msg = match res {
            Ok(Some(m)) => m,
            Ok(None) => return Err(no_link(index)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => return Err(no_link(index)),
            Err(e) => return Err(kernel(format!("looking up link {index}"), &e)),
        };
        Ok(msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(1500))
    }

    /// Send one tc request and wait for its ACK (rtnetlink's QDiscNewRequest cannot carry
    /// options, so the message is built here and sent as is).
    fn tc_request(
        &self,
        body: RouteNetlinkMessage,
        flags: u16,
    ) -> std::result::Result<(), rtnetlink::Error> {
        let mut handle = self.handle.clone();
        let mut req = NetlinkMessage::from(body);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        self.run(async move {
            let mut resp = handle.request(req)?;
            while let Some(m) = resp.next().await {
                if let NetlinkPayload::Error(e) = m.payload {
                    // An error message without a code is the ACK.
                    if e.code.is_some() {
                        return Err(rtnetlink::Error::NetlinkError(e));
                    }
                }
            }
            Ok(())
        })
    }
}

fn no_link(index: u32) -> Error {
    Error::invalid(
        format!("link {index}"),
        "does not exist in this network namespace",
        "check the link index and that the socket was opened in the right netns",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, NlaBuffer, NlasIterator, Parseable};

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn default_burst_and_limit() {
        // 20mbit = 2.5 MB/s: 10 ms is 25000 bytes; 25 ms of queue is 62500 bytes more.
        let p = tbf_params(rate("20mbit"), None, 25, 1500).unwrap();
        assert_eq!(p.rate_bytes, 2_500_000);
        assert_eq!(p.burst, 25_000);
        assert_eq!(p.limit, 62_500 + 25_000);
        // 25000 bytes at 2.5 MB/s = 10 ms = 10_000_000 ns = 156250 ticks of 64 ns.
        assert_eq!(p.buffer_ticks, 156_250);
        // A slow rate still takes a full frame.
        let p = tbf_params(rate("8kbit"), None, 25, 1500).unwrap();
        assert_eq!(p.burst, 1514);
        let p = tbf_params(rate("8kbit"), None, 25, 9000).unwrap();
        assert_eq!(p.burst, 9014);
        // Explicit burst is kept.
        let p = tbf_params(rate("1gbit"), Some(1_000_000), 25, 1500).unwrap();
        assert_eq!(p.burst, 1_000_000);
    }

    #[test]
    fn psched_ticks_are_64ns_here() {
        // /proc/net/psched: NSEC_PER_USEC, PSCHED_TICKS2NS(1), 1000000, clock resolution.
        let Ok(s) = std::fs::read_to_string("/proc/net/psched") else {
            return;
        };
        let f: Vec<u32> = s
            .split_whitespace()
            .map(|x| u32::from_str_radix(x, 16).unwrap())
            .collect();
        assert_eq!(f[0], 1000);
        assert_eq!(f[1], 1 << PSCHED_SHIFT, "{s}");
    }

    #[test]
    fn huge_values_saturate() {
        let p = tbf_params(Rate::from_bits(u64::MAX), None, MAX_LATENCY_MS, 65535).unwrap();
        assert_eq!(p.burst, u32::MAX);
        assert_eq!(p.limit, u32::MAX);
        let p = tbf_params(rate("8bit"), Some(u32::MAX), 25, 1500).unwrap();
        assert_eq!(p.buffer_ticks, u32::MAX);
    }

    #[test]
    fn refused() {
        for (r, burst, lat, needle) in [
            (Rate::from_bits(0), None, 25, "below one byte"),
            (Rate::from_bits(7), None, 25, "below one byte"),
            (rate("1mbit"), None, 0, "latency"),
            (rate("1mbit"), None, 10_001, "latency"),
            (rate("1mbit"), Some(1000), 25, "full frame (1514 bytes)"),
        ] {
            let e = tbf_params(r, burst, lat, 1500).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
            assert!(e.contains("bandwidth limit"), "{e}");
        }
    }

    /// The message parses back with netlink-packet-route, and TCA_OPTIONS has the kernel's
    /// layouts.
    fn encode(p: &TbfParams) -> Vec<(u16, Vec<u8>)> {
        let msg = tbf_message(7, p);
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        let back = TcMessage::parse(buf.as_slice()).unwrap();
        assert_eq!(back.header.index, 7);
        assert_eq!(back.header.parent, TcHandle::ROOT);
        assert_eq!(back.header.handle, TcHandle::UNSPEC);
        assert!(back
            .attributes
            .contains(&TcAttribute::Kind("tbf".to_string())));
        // Walk the raw NLAs after the 20-byte tcmsg: TCA_KIND, then nested TCA_OPTIONS.
        let mut out = vec![];
        for nla in NlasIterator::new(&buf[20..]) {
            let nla: NlaBuffer<&[u8]> = nla.unwrap();
            if nla.kind() == 2 {
                for inner in NlasIterator::new(nla.value()) {
                    let inner = inner.unwrap();
                    out.push((inner.kind(), inner.value().to_vec()));
                }
            }
        }
        out
    }

    #[test]
    fn tbf_encoding() {
        let p = tbf_params(rate("20mbit"), None, 25, 1500).unwrap();
        let nlas = encode(&p);
        assert_eq!(nlas.len(), 2, "{nlas:?}");
        let (k, parms) = &nlas[0];
        assert_eq!(*k, TCA_TBF_PARMS);
        assert_eq!(parms.len(), 36);
        assert_eq!(parms[0], 0, "cell_log");
        assert_eq!(parms[1], TC_LINKLAYER_ETHERNET);
        assert_eq!(u32_at(parms, 8), 2_500_000, "rate");
        assert!(parms[12..24].iter().all(|b| *b == 0), "no peakrate");
        assert_eq!(u32_at(parms, 24), p.limit);
        assert_eq!(u32_at(parms, 28), p.buffer_ticks);
        assert_eq!(u32_at(parms, 32), 0, "mtu");
        assert_eq!(nlas[1], (TCA_TBF_BURST, 25_000u32.to_ne_bytes().to_vec()));
    }

    #[test]
    fn tbf_rate64() {
        // 40gbit = 5e9 bytes/s, above u32: the 32-bit field is saturated, RATE64 has it all.
        let p = tbf_params(rate("40gbit"), None, 25, 1500).unwrap();
        let nlas = encode(&p);
        assert_eq!(nlas.len(), 3);
        assert_eq!(u32_at(&nlas[0].1, 8), u32::MAX);
        assert_eq!(
            nlas[2],
            (TCA_TBF_RATE64, 5_000_000_000u64.to_ne_bytes().to_vec())
        );
        // Exactly u32::MAX bytes/s still fits the 32-bit field.
        let p = tbf_params(Rate::from_bits(u64::from(u32::MAX) * 8), None, 25, 1500).unwrap();
        assert_eq!(encode(&p).len(), 2);
    }
}
