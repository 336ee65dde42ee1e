//! Test helpers: frames built with etherparse's PacketBuilder and capture files built in memory.
#![allow(dead_code)]

use etherparse::PacketBuilder;

pub const C: [u8; 4] = [10, 0, 0, 1];
pub const S: [u8; 4] = [10, 0, 0, 2];
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// TCP flag letters: S F R P A U.
pub fn tcp(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: &str,
    window: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, window);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            'A' => b.ack(1),
            'U' => b.urg(0),
            _ => b,
        };
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("build tcp");
    v
}

pub fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .expect("build udp");
    v
}

pub fn icmp(src: [u8; 4], dst: [u8; 4], typ: u8, code: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .icmpv4_raw(typ, code, [0, 1, 0, 1])
        .write(&mut v, &[0u8; 8])
        .expect("build icmp");
    v
}

/// Classic pcap with the given byte order and timestamp precision.
pub fn pcap(frames: &[(i64, Vec<u8>)], link: u32, big_endian: bool, nanos: bool) -> Vec<u8> {
    let w32 = |v: &mut Vec<u8>, x: u32| {
        if big_endian {
            v.extend_from_slice(&x.to_be_bytes())
        } else {
            v.extend_from_slice(&x.to_le_bytes())
        }
    };
    let w16 = |v: &mut Vec<u8>, x: u16| {
        if big_endian {
            v.extend_from_slice(&x.to_be_bytes())
        } else {
            v.extend_from_slice(&x.to_le_bytes())
        }
    };
    let mut v = Vec::new();
    w32(&mut v, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
    w16(&mut v, 2);
    w16(&mut v, 4);
    w32(&mut v, 0);
    w32(&mut v, 0);
    w32(&mut v, 65535);
    w32(&mut v, link);
    for (ts, f) in frames {
        w32(&mut v, (ts / 1_000_000) as u32);
        let frac = (ts % 1_000_000) as u32;
        w32(&mut v, if nanos { frac * 1000 + 999 } else { frac });
        w32(&mut v, f.len() as u32);
        w32(&mut v, f.len() as u32);
        v.extend_from_slice(f);
    }
    v
}

fn ng_block(v: &mut Vec<u8>, typ: u32, body: &[u8]) {
    let mut body = body.to_vec();
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let len = (12 + body.len()) as u32;
    v.extend_from_slice(&typ.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&body);
    v.extend_from_slice(&len.to_le_bytes());
}

/// Little-endian pcapng with one interface per `(link, if_tsresol)` and EPBs `(iface, ts_us, frame)`.
pub fn pcapng(ifaces: &[(u16, u8)], packets: &[(u32, i64, Vec<u8>)]) -> Vec<u8> {
    let mut v = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    ng_block(&mut v, 0x0a0d_0d0a, &shb);
    for (link, resol) in ifaces {
        let mut idb = Vec::new();
        idb.extend_from_slice(&link.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        // if_tsresol option (code 9, length 1), then opt_endofopt.
        idb.extend_from_slice(&9u16.to_le_bytes());
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&[*resol, 0, 0, 0]);
        idb.extend_from_slice(&[0, 0, 0, 0]);
        ng_block(&mut v, 1, &idb);
    }
    for (iface, ts_us, frame) in packets {
        let resol = ifaces[*iface as usize].1;
        let units = (*ts_us as u128 * 10u128.pow(u32::from(resol)) / 1_000_000) as u64;
        let mut epb = Vec::new();
        epb.extend_from_slice(&iface.to_le_bytes());
        epb.extend_from_slice(&((units >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(units as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(frame);
        ng_block(&mut v, 6, &epb);
    }
    v
}
