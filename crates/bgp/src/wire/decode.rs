use super::attr_flags::{EXTENDED_LENGTH, OPTIONAL, TRANSITIVE};
use super::attr_type as at;
use super::error::update_subcode as sub;
use super::frame::header_len;
use super::*;

/// Bounds-checked reader over peer input. Every accessor returns `None` past the end.
struct Cur<'a> {
    buf: &'a [u8],
}

impl<'a> Cur<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.buf.split_at_checked(n)?;
        self.buf = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        let (first, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(*first)
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes(b.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes(b.try_into().ok()?))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Decodes exactly one message (header included), as returned by [`super::next_message`].
pub fn decode(buf: &[u8], ctx: WireContext) -> Result<Message, DecodeError> {
    let short = || DecodeError::BadLength(u16::try_from(buf.len()).unwrap_or(u16::MAX));
    let len = header_len(buf)?.ok_or_else(short)?;
    if len != buf.len() {
        return Err(DecodeError::BadLength(
            u16::try_from(len).unwrap_or(u16::MAX),
        ));
    }
    let len16 = u16::try_from(len).unwrap_or(u16::MAX);
    let kind = *buf.get(18).ok_or_else(short)?;
    let body = buf.get(HEADER_LEN..).unwrap_or_default();
    match kind {
        msg_type::OPEN => {
            if body.len() < 10 {
                return Err(DecodeError::BadLength(len16));
            }
            decode_open(body).map(Message::Open)
        }
        msg_type::UPDATE => {
            if body.len() < 4 {
                return Err(DecodeError::BadLength(len16));
            }
            decode_update(body, ctx).map(Message::Update)
        }
        msg_type::NOTIFICATION => {
            let mut c = Cur::new(body);
            match (c.u8(), c.u8()) {
                (Some(code), Some(subcode)) => Ok(Message::Notification(Notification {
                    code,
                    subcode,
                    data: c.rest().to_vec(),
                })),
                _ => Err(DecodeError::BadLength(len16)),
            }
        }
        msg_type::KEEPALIVE => {
            if body.is_empty() {
                Ok(Message::Keepalive)
            } else {
                Err(DecodeError::BadLength(len16))
            }
        }
        msg_type::ROUTE_REFRESH => {
            let mut c = Cur::new(body);
            match (c.u16(), c.u8(), c.u8(), c.is_empty()) {
                // The third octet is reserved (RFC 2918) or the RFC 7313 subtype; either way
                // a plain refresh request for the family.
                (Some(afi), Some(_), Some(safi), true) => {
                    Ok(Message::RouteRefresh(AfiSafi { afi, safi }))
                }
                _ => Err(DecodeError::MalformedRouteRefresh {
                    len: len16,
                    message: buf.to_vec(),
                }),
            }
        }
        other => Err(DecodeError::BadType(other)),
    }
}

fn decode_open(body: &[u8]) -> Result<Open, DecodeError> {
    let trunc = DecodeError::MalformedOpen("truncated");
    let mut c = Cur::new(body);
    let version = c.u8().ok_or(trunc.clone())?;
    if version != 4 {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let asn2 = c.u16().ok_or(trunc.clone())?;
    let hold_time = c.u16().ok_or(trunc.clone())?;
    let id = c.u32().ok_or(trunc.clone())?;
    let opt_len = c.u8().ok_or(trunc.clone())?;
    let params = c.take(usize::from(opt_len)).ok_or(trunc)?;
    if !c.is_empty() {
        return Err(DecodeError::MalformedOpen(
            "optional parameters length disagrees with message length",
        ));
    }
    if hold_time == 1 || hold_time == 2 {
        return Err(DecodeError::UnacceptableHoldTime(hold_time));
    }
    let bgp_id = Ipv4Addr::from(id);
    if id == 0 {
        return Err(DecodeError::BadBgpId(bgp_id));
    }

    let mut caps = Capabilities::default();
    let mut asn4 = None;
    let mut p = Cur::new(params);
    while !p.is_empty() {
        let bad = DecodeError::MalformedOpen("optional parameter overruns");
        let ptype = p.u8().ok_or(bad.clone())?;
        let plen = p.u8().ok_or(bad.clone())?;
        let pval = p.take(usize::from(plen)).ok_or(bad)?;
        if ptype != 2 {
            return Err(DecodeError::UnsupportedOptionalParameter(ptype));
        }
        let mut cc = Cur::new(pval);
        while !cc.is_empty() {
            let bad = DecodeError::MalformedOpen("capability overruns");
            let code = cc.u8().ok_or(bad.clone())?;
            let clen = cc.u8().ok_or(bad.clone())?;
            let value = cc.take(usize::from(clen)).ok_or(bad)?;
            decode_capability(code, value, &mut caps, &mut asn4)?;
        }
    }
    let my_asn = asn4.unwrap_or(u32::from(asn2));
    if my_asn == 0 {
        return Err(DecodeError::BadPeerAs(0));
    }
    Ok(Open {
        version,
        my_asn,
        hold_time,
        bgp_id,
        capabilities: caps,
    })
}

fn decode_capability(
    code: u8,
    value: &[u8],
    caps: &mut Capabilities,
    asn4: &mut Option<u32>,
) -> Result<(), DecodeError> {
    let mut v = Cur::new(value);
    match code {
        1 => match (v.u16(), v.u8(), v.u8(), v.is_empty()) {
            (Some(afi), Some(_), Some(safi), true) => {
                let fam = AfiSafi { afi, safi };
                if !caps.multiprotocol.contains(&fam) {
                    caps.multiprotocol.push(fam);
                }
            }
            _ => {
                return Err(DecodeError::MalformedOpen(
                    "multiprotocol capability length",
                ));
            }
        },
        2 => caps.route_refresh = true,
        64 => {
            let word = v.u16().ok_or(DecodeError::MalformedOpen(
                "graceful restart capability length",
            ))?;
            let mut gr = GracefulRestart {
                flags: (word >> 12) as u8,
                restart_time: word & 0x0fff,
                families: Vec::new(),
            };
            while !v.is_empty() {
                match (v.u16(), v.u8(), v.u8()) {
                    (Some(afi), Some(safi), Some(flags)) => {
                        gr.families.push(GracefulRestartFamily {
                            afi_safi: AfiSafi { afi, safi },
                            forwarding_preserved: flags & 0x80 != 0,
                        })
                    }
                    _ => {
                        return Err(DecodeError::MalformedOpen(
                            "graceful restart capability length",
                        ));
                    }
                }
            }
            caps.graceful_restart = Some(gr);
        }
        65 => match (v.u32(), v.is_empty()) {
            (Some(asn), true) => {
                caps.four_octet_as = true;
                *asn4 = Some(asn);
            }
            _ => return Err(DecodeError::MalformedOpen("4-octet AS capability length")),
        },
        _ => caps.unknown.push(RawCapability {
            code,
            value: value.to_vec(),
        }),
    }
    Ok(())
}

fn parse_v4_prefixes(bytes: &[u8]) -> Option<Vec<Ipv4Prefix>> {
    parse_prefixes(bytes, |octets: [u8; 4], len| {
        Ipv4Prefix::new(Ipv4Addr::from(octets), len)
    })
}

fn parse_v6_prefixes(bytes: &[u8]) -> Option<Vec<Ipv6Prefix>> {
    parse_prefixes(bytes, |octets: [u8; 16], len| {
        Ipv6Prefix::new(Ipv6Addr::from(octets), len)
    })
}

/// NLRI encoding (RFC 4271 section 4.3): a length in bits, then just enough octets of
/// the address. `N` is the address width in octets; longer prefixes are refused.
fn parse_prefixes<const N: usize, P>(
    bytes: &[u8],
    make: impl Fn([u8; N], u8) -> Option<P>,
) -> Option<Vec<P>> {
    let mut c = Cur::new(bytes);
    let mut out = Vec::new();
    while !c.is_empty() {
        let len = c.u8()?;
        if usize::from(len) > N * 8 {
            return None;
        }
        let body = c.take(usize::from(len).div_ceil(8))?;
        let mut octets = [0u8; N];
        for (dst, src) in octets.iter_mut().zip(body) {
            *dst = *src;
        }
        out.push(make(octets, len)?);
    }
    Some(out)
}

fn parse_as_path(bytes: &[u8], four_octet: bool) -> Option<AsPath> {
    let mut c = Cur::new(bytes);
    let mut segments = Vec::new();
    while !c.is_empty() {
        let kind = match c.u8()? {
            1 => AsSegmentType::Set,
            2 => AsSegmentType::Sequence,
            3 => AsSegmentType::ConfedSequence,
            4 => AsSegmentType::ConfedSet,
            _ => return None,
        };
        let count = c.u8()?;
        if count == 0 {
            return None; // RFC 7606 section 7.2
        }
        let mut asns = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            asns.push(if four_octet {
                c.u32()?
            } else {
                u32::from(c.u16()?)
            });
        }
        segments.push(AsSegment { kind, asns });
    }
    Some(AsPath { segments })
}

/// RFC 4271 section 9.1.2.2 path length: a set counts one, confederation segments count zero.
fn path_len(path: &AsPath) -> usize {
    path.segments
        .iter()
        .map(|s| match s.kind {
            AsSegmentType::Sequence => s.asns.len(),
            AsSegmentType::Set => 1,
            _ => 0,
        })
        .sum()
}

/// RFC 6793 section 4.2.3: rebuild the real path from AS_PATH and AS4_PATH of a 2-octet peer.
fn merge_as4_path(as_path: AsPath, as4: &AsPath) -> AsPath {
    let (n2, n4) = (path_len(&as_path), path_len(as4));
    if n2 < n4 {
        return as_path;
    }
    let mut keep = n2 - n4;
    let mut segments = Vec::new();
    for seg in as_path.segments {
        if keep == 0 {
            break;
        }
        match seg.kind {
            AsSegmentType::Sequence => {
                let take = keep.min(seg.asns.len());
                keep -= take;
                segments.push(AsSegment {
                    kind: seg.kind,
                    asns: seg.asns.into_iter().take(take).collect(),
                });
            }
            AsSegmentType::Set => {
                keep -= 1;
                segments.push(seg);
            }
            _ => segments.push(seg),
        }
    }
    // Join the two halves where a sequence meets a sequence, so `65001` + `4200000000` reads
    // as one sequence rather than two.
    let mut rest = as4.segments.iter().cloned();
    if let Some(first) = rest.next() {
        match segments.last_mut() {
            Some(last)
                if last.kind == AsSegmentType::Sequence
                    && first.kind == AsSegmentType::Sequence
                    && last.asns.len() + first.asns.len() <= 255 =>
            {
                last.asns.extend(first.asns);
            }
            _ => segments.push(first),
        }
    }
    segments.extend(rest);
    AsPath { segments }
}

/// What RFC 7606 says to do with one bad attribute.
enum AttrError {
    Withdraw(&'static str),
    Discard,
    Reset(u8, &'static str),
}

fn decode_update(body: &[u8], ctx: WireContext) -> Result<Update, DecodeError> {
    let list_err = |reason| DecodeError::SessionReset {
        subcode: sub::MALFORMED_ATTRIBUTE_LIST,
        data: Vec::new(),
        reason,
    };
    let mut c = Cur::new(body);
    let wlen = c.u16().ok_or(list_err("truncated"))?;
    let wbytes = c
        .take(usize::from(wlen))
        .ok_or(list_err("withdrawn routes length overruns the message"))?;
    let alen = c.u16().ok_or(list_err("truncated"))?;
    let abytes = c
        .take(usize::from(alen))
        .ok_or(list_err("total path attribute length overruns the message"))?;
    let nbytes = c.rest();

    // RFC 7606 section 5.3: an NLRI field that cannot be parsed leaves nothing to withdraw safely.
    let net_err = |reason| DecodeError::SessionReset {
        subcode: sub::INVALID_NETWORK_FIELD,
        data: Vec::new(),
        reason,
    };
    let withdrawn = parse_v4_prefixes(wbytes).ok_or(net_err("malformed withdrawn routes"))?;
    let nlri = parse_v4_prefixes(nbytes).ok_or(net_err("malformed NLRI"))?;

    let mut attrs = PathAttributes::default();
    let mut discarded = Vec::new();
    let mut withdraw_reason: Option<&'static str> = None;
    let mut seen = [false; 256];
    let mut as4_path: Option<AsPath> = None;
    let mut list_complete = true;

    let mut a = Cur::new(abytes);
    while !a.is_empty() {
        let whole_start = a.buf;
        let header = (a.u8(), a.u8());
        let (Some(flags), Some(code)) = header else {
            list_complete = false;
            break;
        };
        let len = if flags & EXTENDED_LENGTH != 0 {
            a.u16().map(usize::from)
        } else {
            a.u8().map(usize::from)
        };
        let Some(value) = len.and_then(|l| a.take(l)) else {
            list_complete = false;
            break;
        };
        let consumed = whole_start.len() - a.buf.len();
        let raw_attr = whole_start.get(..consumed).unwrap_or_default();

        if seen[usize::from(code)] {
            if code == at::MP_REACH_NLRI || code == at::MP_UNREACH_NLRI {
                return Err(list_err("MP_REACH_NLRI or MP_UNREACH_NLRI repeated"));
            }
            // RFC 7606 section 3g: keep the first, discard the rest.
            discarded.push(code);
            continue;
        }
        seen[usize::from(code)] = true;

        match decode_attribute(flags, code, value, ctx, &mut attrs, &mut as4_path) {
            Ok(()) => {}
            Err(AttrError::Discard) => discarded.push(code),
            Err(AttrError::Withdraw(reason)) => {
                withdraw_reason.get_or_insert(reason);
            }
            Err(AttrError::Reset(subcode, reason)) => {
                return Err(DecodeError::SessionReset {
                    subcode,
                    data: raw_attr.to_vec(),
                    reason,
                });
            }
        }
    }

    if !list_complete {
        // RFC 7606 section 4: an attribute overrunning the attribute field is treat-as-withdraw,
        // which needs the NLRI to be locatable. With nothing parsed to withdraw (an MP attribute
        // may be hidden in the unparsed part) only a reset is safe.
        let have_any = !withdrawn.is_empty()
            || !nlri.is_empty()
            || attrs.mp_reach.is_some()
            || attrs.mp_unreach.is_some();
        if !have_any {
            return Err(list_err("path attribute overruns the attribute field"));
        }
        withdraw_reason.get_or_insert("path attribute overruns the attribute field");
    }

    if let Some(as4) = as4_path.as_ref() {
        attrs.as_path = attrs.as_path.take().map(|path| merge_as4_path(path, as4));
    }

    let announces = !nlri.is_empty() || attrs.mp_reach.as_ref().is_some_and(|r| !r.nlri.is_empty());
    if announces && withdraw_reason.is_none() {
        if attrs.origin.is_none() || attrs.as_path.is_none() {
            withdraw_reason = Some("missing well-known mandatory attribute");
        } else if !nlri.is_empty() && attrs.next_hop.is_none() {
            withdraw_reason = Some("missing NEXT_HOP for IPv4 NLRI");
        }
    }

    if let Some(reason) = withdraw_reason {
        let mut prefixes: Vec<Prefix> = withdrawn.into_iter().chain(nlri).map(Prefix::V4).collect();
        if let Some(reach) = attrs.mp_reach {
            prefixes.extend(reach.nlri.into_iter().map(Prefix::V6));
        }
        if let Some(unreach) = attrs.mp_unreach {
            prefixes.extend(unreach.into_iter().map(Prefix::V6));
        }
        return Err(DecodeError::TreatAsWithdraw { prefixes, reason });
    }

    Ok(Update {
        withdrawn,
        attributes: attrs,
        nlri,
        discarded_attributes: discarded,
    })
}

fn u32_value(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.try_into().ok()?))
}

fn decode_attribute(
    flags: u8,
    code: u8,
    value: &[u8],
    ctx: WireContext,
    attrs: &mut PathAttributes,
    as4_path: &mut Option<AsPath>,
) -> Result<(), AttrError> {
    let kind = flags & (OPTIONAL | TRANSITIVE);
    let raw = |attrs: &mut PathAttributes| {
        attrs.other.push(RawAttribute {
            flags: flags & !EXTENDED_LENGTH,
            code,
            value: value.to_vec(),
        })
    };
    // RFC 7606 section 3c: wrong flags on a known attribute get that attribute's own error
    // handling.
    match code {
        at::ORIGIN => {
            let origin = match (kind == TRANSITIVE, value) {
                (true, [0]) => Origin::Igp,
                (true, [1]) => Origin::Egp,
                (true, [2]) => Origin::Incomplete,
                _ => return Err(AttrError::Withdraw("malformed ORIGIN")),
            };
            attrs.origin = Some(origin);
        }
        at::AS_PATH => {
            if kind != TRANSITIVE {
                return Err(AttrError::Withdraw("AS_PATH flags"));
            }
            let path = parse_as_path(value, ctx.four_octet_as)
                .ok_or(AttrError::Withdraw("malformed AS_PATH"))?;
            attrs.as_path = Some(path);
        }
        at::NEXT_HOP => match (kind == TRANSITIVE, value) {
            (true, [a, b, c, d]) => attrs.next_hop = Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => return Err(AttrError::Withdraw("malformed NEXT_HOP")),
        },
        at::MED => match (kind == OPTIONAL, u32_value(value)) {
            (true, Some(med)) => attrs.med = Some(med),
            _ => return Err(AttrError::Withdraw("malformed MULTI_EXIT_DISC")),
        },
        at::LOCAL_PREF => match (kind == TRANSITIVE, u32_value(value)) {
            (true, Some(lp)) => attrs.local_pref = Some(lp),
            // RFC 7606 section 7.5: an external peer's LOCAL_PREF is ignored anyway.
            _ if !ctx.ibgp => return Err(AttrError::Discard),
            _ => return Err(AttrError::Withdraw("malformed LOCAL_PREF")),
        },
        at::ATOMIC_AGGREGATE => {
            if kind != TRANSITIVE || !value.is_empty() {
                return Err(AttrError::Discard);
            }
            raw(attrs);
        }
        at::AGGREGATOR => {
            let want = if ctx.four_octet_as { 8 } else { 6 };
            if kind != (OPTIONAL | TRANSITIVE) || value.len() != want {
                return Err(AttrError::Discard);
            }
            raw(attrs);
        }
        at::COMMUNITIES => {
            if kind != (OPTIONAL | TRANSITIVE) || value.is_empty() || !value.len().is_multiple_of(4)
            {
                return Err(AttrError::Withdraw("malformed COMMUNITIES"));
            }
            attrs.communities = value.chunks_exact(4).filter_map(u32_value).collect();
        }
        at::LARGE_COMMUNITIES => {
            if kind != (OPTIONAL | TRANSITIVE)
                || value.is_empty()
                || !value.len().is_multiple_of(12)
            {
                return Err(AttrError::Withdraw("malformed LARGE_COMMUNITIES"));
            }
            attrs.large_communities = value
                .chunks_exact(12)
                .filter_map(|c| {
                    let mut c = Cur::new(c);
                    Some(LargeCommunity {
                        global_admin: c.u32()?,
                        local_data1: c.u32()?,
                        local_data2: c.u32()?,
                    })
                })
                .collect();
        }
        at::AS4_PATH => {
            // RFC 6793: a 4-octet peer must not send it; from a 2-octet peer a bad one is dropped.
            if ctx.four_octet_as || kind != (OPTIONAL | TRANSITIVE) {
                return Err(AttrError::Discard);
            }
            let path = parse_as_path(value, true).ok_or(AttrError::Discard)?;
            if path
                .segments
                .iter()
                .any(|s| !matches!(s.kind, AsSegmentType::Sequence | AsSegmentType::Set))
            {
                return Err(AttrError::Discard);
            }
            *as4_path = Some(path);
        }
        at::AS4_AGGREGATOR => {
            if ctx.four_octet_as || value.len() != 8 {
                return Err(AttrError::Discard);
            }
            raw(attrs);
        }
        at::MP_REACH_NLRI => {
            // RFC 7606 section 7.11: without AFI/SAFI disable, a malformed MP attribute resets.
            let bad = AttrError::Reset(sub::OPTIONAL_ATTRIBUTE, "malformed MP_REACH_NLRI");
            if kind != OPTIONAL {
                return Err(bad);
            }
            let mut c = Cur::new(value);
            let (Some(afi), Some(safi)) = (c.u16(), c.u8()) else {
                return Err(bad);
            };
            if (AfiSafi { afi, safi }) != AfiSafi::IPV6_UNICAST {
                // Another family: carried raw for the speaker to judge against negotiation.
                raw(attrs);
                return Ok(());
            }
            let nh_len = c.u8().ok_or(AttrError::Reset(
                sub::OPTIONAL_ATTRIBUTE,
                "malformed MP_REACH_NLRI",
            ))?;
            let nh = c.take(usize::from(nh_len)).unwrap_or_default();
            let mut n = Cur::new(nh);
            let addr = |n: &mut Cur| -> Option<Ipv6Addr> {
                let b: [u8; 16] = n.take(16)?.try_into().ok()?;
                Some(Ipv6Addr::from(b))
            };
            let (next_hop, link_local_next_hop) = match nh_len {
                16 => (addr(&mut n), None),
                32 => (addr(&mut n), addr(&mut n)),
                _ => (None, None),
            };
            let (Some(next_hop), Some(_reserved)) = (next_hop, c.u8()) else {
                return Err(bad);
            };
            if nh_len == 32 && link_local_next_hop.is_none() {
                return Err(bad);
            }
            let nlri = parse_v6_prefixes(c.rest()).ok_or(bad)?;
            attrs.mp_reach = Some(MpReachIpv6 {
                next_hop,
                link_local_next_hop,
                nlri,
            });
        }
        at::MP_UNREACH_NLRI => {
            let bad = AttrError::Reset(sub::OPTIONAL_ATTRIBUTE, "malformed MP_UNREACH_NLRI");
            if kind != OPTIONAL {
                return Err(bad);
            }
            let mut c = Cur::new(value);
            let (Some(afi), Some(safi)) = (c.u16(), c.u8()) else {
                return Err(bad);
            };
            if (AfiSafi { afi, safi }) != AfiSafi::IPV6_UNICAST {
                raw(attrs);
                return Ok(());
            }
            attrs.mp_unreach = Some(parse_v6_prefixes(c.rest()).ok_or(bad)?);
        }
        _ => {
            if flags & OPTIONAL == 0 {
                return Err(AttrError::Reset(
                    sub::UNRECOGNIZED_WELL_KNOWN,
                    "unrecognized well-known attribute",
                ));
            }
            raw(attrs);
        }
    }
    Ok(())
}
