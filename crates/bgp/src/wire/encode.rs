use super::attr_flags::{EXTENDED_LENGTH, OPTIONAL, TRANSITIVE};
use super::attr_type as at;
use super::*;

/// Serialises one message, header included.
///
/// Message size is the caller's responsibility: the speaker packs UPDATEs so they stay within
/// [`MAX_MESSAGE_LEN`]; a longer one would be refused by the peer with 1/2.
pub fn encode(msg: &Message, ctx: WireContext) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&[0, 0]); // length, patched below
    match msg {
        Message::Open(open) => {
            out.push(msg_type::OPEN);
            encode_open(open, &mut out);
        }
        Message::Update(update) => {
            out.push(msg_type::UPDATE);
            encode_update(update, ctx, &mut out);
        }
        Message::Notification(n) => {
            out.push(msg_type::NOTIFICATION);
            out.push(n.code);
            out.push(n.subcode);
            out.extend_from_slice(&n.data);
        }
        Message::Keepalive => out.push(msg_type::KEEPALIVE),
        Message::RouteRefresh(fam) => {
            out.push(msg_type::ROUTE_REFRESH);
            out.extend_from_slice(&fam.afi.to_be_bytes());
            out.push(0);
            out.push(fam.safi);
        }
    }
    let len = u16::try_from(out.len()).unwrap_or(u16::MAX).to_be_bytes();
    out[16] = len[0];
    out[17] = len[1];
    out
}

fn push_capability(params: &mut Vec<u8>, code: u8, value: &[u8]) {
    // One optional parameter (type 2) per capability, as FRR and BIRD send them.
    let value = value.get(..253).unwrap_or(value);
    params.push(2);
    params.push((value.len() + 2) as u8);
    params.push(code);
    params.push(value.len() as u8);
    params.extend_from_slice(value);
}

fn encode_open(open: &Open, out: &mut Vec<u8>) {
    out.push(open.version);
    let two = u16::try_from(open.my_asn).unwrap_or(AS_TRANS);
    out.extend_from_slice(&two.to_be_bytes());
    out.extend_from_slice(&open.hold_time.to_be_bytes());
    out.extend_from_slice(&open.bgp_id.octets());

    let caps = &open.capabilities;
    let mut params = Vec::new();
    for fam in &caps.multiprotocol {
        let [a, b] = fam.afi.to_be_bytes();
        push_capability(&mut params, 1, &[a, b, 0, fam.safi]);
    }
    if caps.route_refresh {
        push_capability(&mut params, 2, &[]);
    }
    if let Some(gr) = &caps.graceful_restart {
        let word = (u16::from(gr.flags & 0xf) << 12) | (gr.restart_time & 0x0fff);
        let mut v = word.to_be_bytes().to_vec();
        for f in &gr.families {
            v.extend_from_slice(&f.afi_safi.afi.to_be_bytes());
            v.push(f.afi_safi.safi);
            v.push(if f.forwarding_preserved { 0x80 } else { 0 });
        }
        push_capability(&mut params, 64, &v);
    }
    if caps.four_octet_as {
        push_capability(&mut params, 65, &open.my_asn.to_be_bytes());
    }
    for raw in &caps.unknown {
        push_capability(&mut params, raw.code, &raw.value);
    }
    out.push(u8::try_from(params.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&params);
}

pub(crate) fn push_v4_prefix(out: &mut Vec<u8>, p: &Ipv4Prefix) {
    let octets = p.addr().octets();
    let n = usize::from(p.len()).div_ceil(8);
    out.push(p.len());
    out.extend_from_slice(octets.get(..n).unwrap_or(&octets));
}

fn push_v6_prefix(out: &mut Vec<u8>, p: &Ipv6Prefix) {
    let octets = p.addr().octets();
    let n = usize::from(p.len()).div_ceil(8);
    out.push(p.len());
    out.extend_from_slice(octets.get(..n).unwrap_or(&octets));
}

fn push_attr(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    let flags = flags & !EXTENDED_LENGTH;
    if let Ok(short) = u8::try_from(value.len()) {
        out.extend_from_slice(&[flags, code, short]);
    } else {
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&[flags | EXTENDED_LENGTH, code]);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(value);
}

/// AS_PATH / AS4_PATH value. With `two_octet`, ASNs above 65535 become AS_TRANS.
/// Segments longer than 255 ASNs are split, as RFC 4271 requires.
fn as_path_value(path: &AsPath, two_octet: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for seg in &path.segments {
        for chunk in seg.asns.chunks(255) {
            v.push(seg.kind as u8);
            v.push(chunk.len() as u8);
            for asn in chunk {
                if two_octet {
                    v.extend_from_slice(&u16::try_from(*asn).unwrap_or(AS_TRANS).to_be_bytes());
                } else {
                    v.extend_from_slice(&asn.to_be_bytes());
                }
            }
        }
    }
    v
}

fn encode_update(u: &Update, ctx: WireContext, out: &mut Vec<u8>) {
    let mut withdrawn = Vec::new();
    for p in &u.withdrawn {
        push_v4_prefix(&mut withdrawn, p);
    }
    out.extend_from_slice(&u16::try_from(withdrawn.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&withdrawn);

    let a = &u.attributes;
    let mut attrs = Vec::new();
    if let Some(origin) = a.origin {
        push_attr(&mut attrs, TRANSITIVE, at::ORIGIN, &[origin as u8]);
    }
    if let Some(path) = &a.as_path {
        push_attr(
            &mut attrs,
            TRANSITIVE,
            at::AS_PATH,
            &as_path_value(path, !ctx.four_octet_as),
        );
    }
    if let Some(nh) = a.next_hop {
        push_attr(&mut attrs, TRANSITIVE, at::NEXT_HOP, &nh.octets());
    }
    if let Some(med) = a.med {
        push_attr(&mut attrs, OPTIONAL, at::MED, &med.to_be_bytes());
    }
    if let Some(lp) = a.local_pref {
        push_attr(&mut attrs, TRANSITIVE, at::LOCAL_PREF, &lp.to_be_bytes());
    }
    if !a.communities.is_empty() {
        let v: Vec<u8> = a.communities.iter().flat_map(|c| c.to_be_bytes()).collect();
        push_attr(&mut attrs, OPTIONAL | TRANSITIVE, at::COMMUNITIES, &v);
    }
    if let Some(reach) = &a.mp_reach {
        let mut v = vec![0, 2, 1];
        match reach.link_local_next_hop {
            Some(ll) => {
                v.push(32);
                v.extend_from_slice(&reach.next_hop.octets());
                v.extend_from_slice(&ll.octets());
            }
            None => {
                v.push(16);
                v.extend_from_slice(&reach.next_hop.octets());
            }
        }
        v.push(0); // reserved
        for p in &reach.nlri {
            push_v6_prefix(&mut v, p);
        }
        push_attr(&mut attrs, OPTIONAL, at::MP_REACH_NLRI, &v);
    }
    if let Some(withdrawn) = &a.mp_unreach {
        let mut v = vec![0, 2, 1];
        for p in withdrawn {
            push_v6_prefix(&mut v, p);
        }
        push_attr(&mut attrs, OPTIONAL, at::MP_UNREACH_NLRI, &v);
    }
    if let Some(path) = &a.as_path {
        // Toward a 2-octet peer the real path rides in AS4_PATH when any ASN needs it (RFC 6793).
        let needs_as4 = path
            .segments
            .iter()
            .any(|s| s.asns.iter().any(|asn| *asn > u32::from(u16::MAX)));
        if !ctx.four_octet_as && needs_as4 {
            let as4 = AsPath {
                segments: path
                    .segments
                    .iter()
                    .filter(|s| matches!(s.kind, AsSegmentType::Sequence | AsSegmentType::Set))
                    .cloned()
                    .collect(),
            };
            push_attr(
                &mut attrs,
                OPTIONAL | TRANSITIVE,
                at::AS4_PATH,
                &as_path_value(&as4, false),
            );
        }
    }
    if !a.large_communities.is_empty() {
        let mut v = Vec::with_capacity(a.large_communities.len() * 12);
        for c in &a.large_communities {
            v.extend_from_slice(&c.global_admin.to_be_bytes());
            v.extend_from_slice(&c.local_data1.to_be_bytes());
            v.extend_from_slice(&c.local_data2.to_be_bytes());
        }
        push_attr(&mut attrs, OPTIONAL | TRANSITIVE, at::LARGE_COMMUNITIES, &v);
    }
    for raw in &a.other {
        push_attr(&mut attrs, raw.flags, raw.code, &raw.value);
    }
    out.extend_from_slice(&u16::try_from(attrs.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&attrs);
    for p in &u.nlri {
        push_v4_prefix(out, p);
    }
}
