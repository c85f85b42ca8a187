//! One query in, one decision out: an answer from the records, a forward, or nothing. No I/O,
//! so every path (bad packets included) is unit-tested and fuzzable without root.
//!
//! Bad input never costs more than the packet: the header is checked by hand before hickory
//! parses anything (one question, no answer or authority records, at most two additional ones:
//! hickory sizes its query vector by the header's count), hickory's decoder bounds labels,
//! names and compression pointers, and every reply fits the client's UDP limit (or is a
//! truncated one that sends it to TCP).

use super::records::{Asker, EndpointKey, Records};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TTL of every local answer: containers come and go within milliseconds, so nothing may cache
/// them (aardvark-dns does the same).
pub const TTL: u32 = 0;
/// The UDP payload size the daemon advertises with EDNS (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Receive buffers and the largest UDP reply the daemon sends.
pub const MAX_UDP: usize = 4096;

const HEADER: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back to the client.
    Reply(Vec<u8>),
    /// Not our name: forward the packet as it is to `servers` (empty: the host's resolvers).
    /// `udp_limit`: the largest reply the client takes over UDP.
    Forward {
        servers: Vec<Ipv4Addr>,
        udp_limit: usize,
    },
    /// Not a query (too short, or a response): send nothing.
    Drop,
}

/// Where a query came in, which decides who asks.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    /// On a gateway listener, from `src`.
    Gateway { gateway: Ipv4Addr, src: Ipv4Addr },
    /// On the listener inside this endpoint's namespace.
    Endpoint(&'a EndpointKey),
}

/// Decide what to do with `packet`, received on `gateway` from `src`; `udp` for the limits.
pub fn handle(
    records: &Records,
    gateway: Ipv4Addr,
    src: Ipv4Addr,
    packet: &[u8],
    udp: bool,
) -> Outcome {
    handle_via(records, Via::Gateway { gateway, src }, packet, udp)
}

/// Decide what to do with `packet`, received as `via` says; `udp` for the limits.
pub fn handle_via(records: &Records, via: Via<'_>, packet: &[u8], udp: bool) -> Outcome {
    if packet.len() < HEADER || packet[2] & 0x80 != 0 {
        return Outcome::Drop;
    }
    let opcode = (packet[2] >> 3) & 0x0f;
    if opcode != 0 {
        return Outcome::Reply(header_only(packet, ResponseCode::NotImp));
    }
    let count = |i: usize| u16::from_be_bytes([packet[i], packet[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 2 {
        return Outcome::Reply(header_only(packet, ResponseCode::FormErr));
    }
    let Ok(msg) = Message::from_vec(packet) else {
        return Outcome::Reply(header_only(packet, ResponseCode::FormErr));
    };
    let Some(q) = msg.queries.first() else {
        return Outcome::Reply(header_only(packet, ResponseCode::FormErr));
    };
    let udp_limit = if udp {
        msg.edns
            .as_ref()
            .map_or(512, |e| usize::from(e.max_payload()).clamp(512, MAX_UDP))
    } else {
        u16::MAX as usize
    };
    let reply = |code: ResponseCode, answers: Vec<Record>, authoritative: bool| {
        Outcome::Reply(encode(&msg, q, code, answers, authoritative, udp_limit))
    };
    let asker = match via {
        Via::Gateway { gateway, src } => records.asker(gateway, src),
        Via::Endpoint(key) => records.endpoint_asker(key),
    };
    let Some(asker) = asker else {
        return reply(ResponseCode::Refused, vec![], false);
    };
    if q.query_class() != DNSClass::IN {
        return reply(ResponseCode::Refused, vec![], false);
    }
    let name = q.name().to_ascii().to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name);
    if let Some(answers) = local(records, &asker, q, name) {
        return reply(ResponseCode::NoError, answers, true);
    }
    match records.forwarding(&asker) {
        Some(servers) => Outcome::Forward { servers, udp_limit },
        None => reply(ResponseCode::NXDomain, vec![], true),
    }
}

/// The answer records when the name is ours (possibly none: a name we own asked for a type we
/// have not, NODATA), None when it is not ours.
fn local(records: &Records, asker: &Asker, q: &Query, name: &str) -> Option<Vec<Record>> {
    if q.query_type() == RecordType::PTR {
        let host = match parse_reverse_any(name)? {
            IpAddr::V4(ip) => records.reverse(asker, ip)?,
            IpAddr::V6(ip) => records.reverse6(asker, ip)?,
        };
        let target = Name::from_ascii(format!("{host}.")).ok()?;
        return Some(vec![Record::from_rdata(
            q.name().clone(),
            TTL,
            RData::PTR(PTR(target)),
        )]);
    }
    let addrs = records.lookup(asker, name)?;
    let a = || {
        addrs
            .iter()
            .map(|&ip| Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))))
    };
    // Every name with A records is in the IPv6 lookup too: empty there is NODATA (a v4-only
    // container), so AAAA never goes upstream nor answers NXDOMAIN (Happy Eyeballs waits on it).
    let aaaa = || {
        records
            .lookup6(asker, name)
            .unwrap_or_default()
            .into_iter()
            .map(|ip| Record::from_rdata(q.name().clone(), TTL, RData::AAAA(AAAA(ip))))
    };
    Some(match q.query_type() {
        RecordType::A => a().collect(),
        RecordType::AAAA => aaaa().collect(),
        RecordType::ANY => a().chain(aaaa()).collect(),
        // MX, TXT, ... of a container name: it exists, without that type.
        _ => Vec::new(),
    })
}

/// An `in-addr.arpa` or `ip6.arpa` name -> the address it stands for.
fn parse_reverse_any(name: &str) -> Option<IpAddr> {
    if name.ends_with(".ip6.arpa") {
        parse_reverse6(name).map(IpAddr::V6)
    } else {
        parse_reverse(name).map(IpAddr::V4)
    }
}

/// `b.a.9.8. ... .0.0.ip6.arpa` (32 nibbles, least significant first) -> the IPv6 address.
fn parse_reverse6(name: &str) -> Option<Ipv6Addr> {
    let rest = name.strip_suffix(".ip6.arpa")?;
    let mut v: u128 = 0;
    let mut n = 0;
    for label in rest.split('.') {
        let [b] = label.as_bytes() else {
            return None;
        };
        if n == 32 {
            return None;
        }
        let d = char::from(*b).to_digit(16)?;
        v |= u128::from(d) << (4 * n);
        n += 1;
    }
    (n == 32).then(|| Ipv6Addr::from(v))
}

/// `d.c.b.a.in-addr.arpa` -> a.b.c.d
fn parse_reverse(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut n = 0;
    for label in rest.split('.') {
        if n == 4
            || label.is_empty()
            || label.len() > 3
            || !label.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        octets[3 - n] = label.parse().ok()?;
        n += 1;
    }
    (n == 4).then(|| Ipv4Addr::from(octets))
}

fn encode(
    query: &Message,
    q: &Query,
    code: ResponseCode,
    answers: Vec<Record>,
    authoritative: bool,
    limit: usize,
) -> Vec<u8> {
    let mut m = Message::new(query.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = query.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.checking_disabled = query.checking_disabled;
    m.metadata.authoritative = authoritative;
    m.metadata.response_code = code;
    m.add_query(q.clone());
    m.add_answers(answers);
    if query.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        m.set_edns(e);
    }
    match m.to_vec() {
        Ok(b) if b.len() <= limit => b,
        // Too big for UDP: the question alone with TC set, and the client asks again over TCP.
        Ok(_) => m
            .truncate()
            .to_vec()
            .unwrap_or_else(|_| header_only_id(query.id, code)),
        Err(_) => header_only_id(query.id, ResponseCode::ServFail),
    }
}

/// A reply of just a header: the query's id, opcode and RD bit, QR and RA set, `code`.
/// Bytes missing from a short `packet` count as zero (found by fuzz/dns_query: never panic).
pub fn header_only(packet: &[u8], code: ResponseCode) -> Vec<u8> {
    let at = |i: usize| packet.get(i).copied().unwrap_or(0);
    let mut h = vec![0u8; HEADER];
    h[0] = at(0);
    h[1] = at(1);
    h[2] = 0x80 | (at(2) & 0x79); // QR, opcode, RD
    h[3] = 0x80 | (code.low() & 0x0f); // RA, rcode
    h
}

fn header_only_id(id: u16, code: ResponseCode) -> Vec<u8> {
    let [a, b] = id.to_be_bytes();
    header_only(&[a, b, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0], code)
}

/// SERVFAIL for a query whose forward failed: the header and the question echoed.
pub fn servfail(packet: &[u8]) -> Vec<u8> {
    match Message::from_vec(packet) {
        Ok(m) if !m.queries.is_empty() => {
            let q = m.queries[0].clone();
            encode(&m, &q, ResponseCode::ServFail, vec![], false, 512)
        }
        _ => header_only(packet, ResponseCode::ServFail),
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::tests::sample;
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// The `ip6.arpa` name of `a`, as `dig -x` writes it.
    fn arpa6(a: &str) -> String {
        let v = u128::from(a.parse::<Ipv6Addr>().unwrap());
        let mut s = String::new();
        for i in 0..32 {
            s.push_str(&format!("{:x}.", (v >> (4 * i)) & 0xf));
        }
        s + "ip6.arpa."
    }

    fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn ask(name: &str, t: RecordType, src: &str, gw: &str) -> Outcome {
        handle(&sample(), ip(gw), ip(src), &query(name, t, false), true)
    }

    fn answer(o: &Outcome) -> (ResponseCode, Vec<String>) {
        let Outcome::Reply(b) = o else {
            panic!("not a reply: {o:?}");
        };
        let m = Message::from_vec(b).unwrap();
        assert_eq!(m.id, 0x1234);
        assert_eq!(m.message_type, MessageType::Response);
        let rdata = m.answers.iter().map(|r| r.data.to_string()).collect();
        (m.response_code, rdata)
    }

    #[test]
    fn a_ptr_nodata_nxdomain_forward() {
        let (web, gw) = ("10.1.0.2", "10.1.0.1");
        assert_eq!(
            answer(&ask("both.", RecordType::A, web, gw)),
            (ResponseCode::NoError, vec!["10.1.0.3".into()])
        );
        assert_eq!(
            answer(&ask("WWW.a.", RecordType::A, web, gw)),
            (ResponseCode::NoError, vec!["10.1.0.2".into()])
        );
        assert_eq!(
            answer(&ask("3.0.1.10.in-addr.arpa.", RecordType::PTR, web, gw)),
            (ResponseCode::NoError, vec!["both.".into()])
        );
        assert_eq!(
            answer(&ask("web.", RecordType::AAAA, web, gw)),
            (ResponseCode::NoError, vec![])
        );
        assert_eq!(
            ask("example.org.", RecordType::A, web, gw),
            Outcome::Forward {
                servers: vec![],
                udp_limit: 512
            }
        );
        // Not visible from network a: forwarded like any other name.
        assert!(matches!(
            ask("db.", RecordType::A, web, gw),
            Outcome::Forward { .. }
        ));
        // Internal: own names, and NXDOMAIN instead of a forward.
        assert_eq!(
            answer(&ask("secret.", RecordType::A, "10.3.0.2", "10.3.0.1")),
            (ResponseCode::NoError, vec!["10.3.0.2".into()])
        );
        assert_eq!(
            answer(&ask("example.org.", RecordType::A, "10.3.0.2", "10.3.0.1")).0,
            ResponseCode::NXDomain
        );
        // From another network's subnet: refused.
        assert_eq!(
            answer(&ask("web.", RecordType::A, "10.2.0.2", gw)).0,
            ResponseCode::Refused
        );
    }

    #[test]
    fn aaaa_ip6_ptr_and_nodata_for_v4_only_names() {
        let (v6a, gw) = ("10.5.0.2", "10.5.0.1");
        for name in ["v6a.", "SIX.", "six.ds."] {
            assert_eq!(
                answer(&ask(name, RecordType::AAAA, v6a, gw)),
                (ResponseCode::NoError, vec!["fd00:5::2".into()]),
                "{name}"
            );
        }
        assert_eq!(
            answer(&ask("mixed.", RecordType::AAAA, v6a, gw)),
            (ResponseCode::NoError, vec!["fd00:5::4".into()])
        );
        // A still answers IPv4 only; ANY both.
        assert_eq!(
            answer(&ask("mixed.", RecordType::A, v6a, gw)),
            (ResponseCode::NoError, vec!["10.5.0.4".into()])
        );
        assert_eq!(
            answer(&ask("mixed.", RecordType::ANY, v6a, gw)),
            (
                ResponseCode::NoError,
                vec!["10.5.0.4".into(), "fd00:5::4".into()]
            )
        );
        // PTR of a container's IPv6 address, upper-case nibbles too.
        assert_eq!(
            answer(&ask(&arpa6("fd00:5::4"), RecordType::PTR, v6a, gw)),
            (ResponseCode::NoError, vec!["mixed.".into()])
        );
        assert_eq!(
            answer(&ask(
                &arpa6("fd00:5::2").to_ascii_uppercase(),
                RecordType::PTR,
                v6a,
                gw
            )),
            (ResponseCode::NoError, vec!["v6a.".into()])
        );
        // Not a container's (or not visible): forwarded like any other reverse name.
        assert!(matches!(
            ask(&arpa6("fd00:5::99"), RecordType::PTR, v6a, gw),
            Outcome::Forward { .. }
        ));
        assert!(matches!(
            ask(&arpa6("fd00:6::2"), RecordType::PTR, v6a, gw),
            Outcome::Forward { .. }
        ));
        // A name on a v4-only network: NODATA, never NXDOMAIN nor forwarded, also for a
        // container whose IPv6 address lives on a network the asker does not share.
        let (web, gw_a) = ("10.1.0.2", "10.1.0.1");
        for name in ["web.", "www.a.", "mixed.", "both."] {
            assert_eq!(
                answer(&ask(name, RecordType::AAAA, web, gw_a)),
                (ResponseCode::NoError, vec![]),
                "{name}"
            );
        }
        assert!(matches!(
            ask(&arpa6("fd00:5::4"), RecordType::PTR, web, gw_a),
            Outcome::Forward { .. }
        ));
        assert!(matches!(
            ask("v6a.", RecordType::AAAA, web, gw_a),
            Outcome::Forward { .. }
        ));
        // Internal dual-stack: own AAAA and PTR; anything else NXDOMAIN, not forwarded.
        let (hush, gw_i) = ("10.6.0.2", "10.6.0.1");
        assert_eq!(
            answer(&ask("hush.", RecordType::AAAA, hush, gw_i)),
            (ResponseCode::NoError, vec!["fd00:6::2".into()])
        );
        assert_eq!(
            answer(&ask(&arpa6("fd00:6::2"), RecordType::PTR, hush, gw_i)),
            (ResponseCode::NoError, vec!["hush.".into()])
        );
        assert_eq!(
            answer(&ask("v6a.", RecordType::AAAA, hush, gw_i)).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            answer(&ask("example.org.", RecordType::AAAA, hush, gw_i)).0,
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn ip6_arpa_names_parse_strictly() {
        let full = arpa6("fd00:5::4");
        let full = full.trim_end_matches('.');
        assert_eq!(parse_reverse6(full), Some("fd00:5::4".parse().unwrap()));
        assert_eq!(
            parse_reverse_any(full),
            Some(IpAddr::V6("fd00:5::4".parse().unwrap()))
        );
        assert_eq!(
            parse_reverse_any("4.3.2.1.in-addr.arpa"),
            Some(IpAddr::V4(ip("1.2.3.4")))
        );
        // Too few or too many nibbles, a two-character label, a non-hex one, empty labels.
        assert!(parse_reverse6(&full[2..]).is_none());
        assert!(parse_reverse6(&format!("0.{full}")).is_none());
        assert!(parse_reverse6(&full.replacen("4.0", "40", 1)).is_none());
        assert!(parse_reverse6(&full.replacen('4', "g", 1)).is_none());
        assert!(parse_reverse6(&full.replacen("4.", ".", 1)).is_none());
        assert!(parse_reverse6("ip6.arpa").is_none());
        assert!(parse_reverse_any("x.ip6.arpa").is_none());
    }

    #[test]
    fn edns_raises_the_udp_limit_and_is_echoed() {
        let o = handle(
            &sample(),
            ip("10.1.0.1"),
            ip("10.1.0.2"),
            &query("web.", RecordType::A, true),
            true,
        );
        let Outcome::Reply(b) = o else { panic!() };
        assert_eq!(
            Message::from_vec(&b).unwrap().edns.unwrap().max_payload(),
            EDNS_PAYLOAD
        );
        let o = handle(
            &sample(),
            ip("10.1.0.1"),
            ip("10.1.0.2"),
            &query("x.org.", RecordType::A, true),
            true,
        );
        assert_eq!(
            o,
            Outcome::Forward {
                servers: vec![],
                udp_limit: 1232
            }
        );
    }

    #[test]
    fn bad_packets() {
        let r = sample();
        let (gw, src) = (ip("10.1.0.1"), ip("10.1.0.2"));
        assert_eq!(handle(&r, gw, src, &[1, 2, 3], true), Outcome::Drop);
        let mut resp = query("web.", RecordType::A, false);
        resp[2] |= 0x80;
        assert_eq!(handle(&r, gw, src, &resp, true), Outcome::Drop);
        let mut two = query("web.", RecordType::A, false);
        two[5] = 2;
        assert_eq!(
            answer(&handle(&r, gw, src, &two, true)).0,
            ResponseCode::FormErr
        );
        let mut notify = query("web.", RecordType::A, false);
        notify[2] |= 4 << 3;
        assert_eq!(
            answer(&handle(&r, gw, src, &notify, true)).0,
            ResponseCode::NotImp
        );
        // A compression pointer to itself in the question.
        let mut looped = query("web.", RecordType::A, false);
        looped.truncate(HEADER);
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(
            answer(&handle(&r, gw, src, &looped, true)).0,
            ResponseCode::FormErr
        );
        // Truncated in the middle of the name.
        let cut = &query("web.", RecordType::A, false)[..15];
        assert_eq!(
            answer(&handle(&r, gw, src, cut, true)).0,
            ResponseCode::FormErr
        );
        assert!(parse_reverse("1.2.3.4.5.in-addr.arpa").is_none());
        assert!(parse_reverse("1.2.3.256.in-addr.arpa").is_none());
        assert_eq!(parse_reverse("4.3.2.1.in-addr.arpa"), Some(ip("1.2.3.4")));
    }

    #[test]
    fn servfail_echoes_the_question() {
        let q = query("x.org.", RecordType::MX, false);
        let m = Message::from_vec(&servfail(&q)).unwrap();
        assert_eq!(m.response_code, ResponseCode::ServFail);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.id, 0x1234);
    }

    proptest! {
        #[test]
        fn never_panics_and_fits(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let r = sample();
            for udp in [true, false] {
                if let Outcome::Reply(b) = handle(&r, ip("10.1.0.1"), ip("10.1.0.2"), &bytes, udp) {
                    prop_assert!(b.len() <= MAX_UDP);
                    prop_assert!(b.len() >= HEADER);
                }
            }
        }

        #[test]
        fn mutated_queries_never_panic(pos in 0usize..40, val in any::<u8>()) {
            let mut q = query("both.a.", RecordType::A, true);
            if pos < q.len() {
                q[pos] = val;
            }
            let _ = handle(&sample(), ip("10.1.0.1"), ip("10.1.0.2"), &q, true);
        }
    }
}
