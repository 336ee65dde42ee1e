//! Decoding of every supported link type, VLAN/QinQ, IPv4 options and fragments, IPv6.

mod common;

use common::*;
use etherparse::{PacketBuilder, VlanId};
use metaids_flow::{decode, LinkType, SkipReason};

#[test]
fn link_types() {
    let eth = udp(C, S, 1111, 53, &[0u8; 12]);
    let ip = &eth[14..];
    let want = decode(LinkType::ETHERNET, &eth).expect("eth");
    assert_eq!(
        (
            want.src_port,
            want.dst_port,
            want.protocol,
            want.payload_len,
            want.header_len
        ),
        (1111, 53, 17, 12, 8)
    );

    let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(ip);
    assert_eq!(
        decode(LinkType::LINUX_SLL, &sll).expect("sll").payload_len,
        12
    );

    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
    ];
    sll2.extend_from_slice(ip);
    assert_eq!(
        decode(LinkType::LINUX_SLL2, &sll2).expect("sll2").src_port,
        1111
    );

    for fam in [2u32.to_le_bytes(), 2u32.to_be_bytes()] {
        let mut null = fam.to_vec();
        null.extend_from_slice(ip);
        assert_eq!(decode(LinkType::NULL, &null).expect("null").dst_port, 53);
    }
    assert_eq!(decode(LinkType::RAW, ip).expect("raw").dst_port, 53);
    assert_eq!(decode(LinkType::IPV4, ip).expect("ipv4").dst_port, 53);
    assert_eq!(
        decode(LinkType(147), ip),
        Err(SkipReason::UnsupportedLinkType)
    );
}

#[test]
fn vlan_and_qinq() {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .double_vlan(
            VlanId::try_new(10).expect("vid"),
            VlanId::try_new(20).expect("vid"),
        )
        .ipv4(C, S, 64)
        .tcp(1, 2, 0, 100)
        .syn()
        .write(&mut v, &[0u8; 3])
        .expect("build");
    let p = decode(LinkType::ETHERNET, &v).expect("qinq");
    assert_eq!(
        (p.vlan_tags, p.src_port, p.payload_len, p.tcp_window),
        (2, 1, 3, 100)
    );
}

#[test]
fn ipv4_options_fragments_and_padding() {
    // Ethernet padding after a short IPv4 packet is not payload.
    let mut eth = tcp(C, S, 1, 2, "A", 5, &[]);
    eth.extend_from_slice(&[0u8; 6]);
    assert_eq!(
        decode(LinkType::ETHERNET, &eth)
            .expect("padded")
            .payload_len,
        0
    );

    // IPv4 header with 4 bytes of options (IHL 6).
    let plain = udp(C, S, 7, 8, &[0u8; 4]);
    let ip = &plain[14..];
    let mut opt = Vec::new();
    opt.push(0x46);
    opt.extend_from_slice(&ip[1..20]);
    let total = (ip.len() + 4) as u16;
    opt[2..4].copy_from_slice(&total.to_be_bytes());
    opt.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    opt.extend_from_slice(&ip[20..]);
    let p = decode(LinkType::RAW, &opt).expect("options");
    assert!(p.ipv4_options);
    assert_eq!((p.src_port, p.payload_len), (7, 4));

    // A later fragment (offset 8 bytes): port-less, same protocol.
    let mut frag = ip.to_vec();
    frag[6..8].copy_from_slice(&1u16.to_be_bytes());
    let p = decode(LinkType::RAW, &frag).expect("fragment");
    assert!(p.fragment);
    assert_eq!((p.protocol, p.src_port, p.dst_port), (17, 0, 0));
    // A first fragment (MF set, offset 0) keeps its ports.
    let mut first = ip.to_vec();
    first[6] = 0x20;
    let p = decode(LinkType::RAW, &first).expect("first fragment");
    assert!(p.fragment);
    assert_eq!(p.src_port, 7);
}

#[test]
fn ipv6_and_icmpv6() {
    let a = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let b = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let mut v = Vec::new();
    PacketBuilder::ipv6(a, b, 64)
        .tcp(5, 6, 0, 7)
        .syn()
        .write(&mut v, &[1, 2])
        .expect("v6");
    let p = decode(LinkType::IPV6, &v).expect("v6 tcp");
    assert_eq!((p.protocol, p.payload_len, p.header_len), (6, 2, 20));
    let mut w = Vec::new();
    PacketBuilder::ipv6(a, b, 64)
        .icmpv6_echo_request(1, 2)
        .write(&mut w, &[])
        .expect("icmpv6");
    let p = decode(LinkType::RAW, &w).expect("v6 icmp");
    assert_eq!((p.protocol, p.icmp), (58, Some((128, 0))));
}

#[test]
fn arp_is_not_ip() {
    let mut v = vec![0xff; 6];
    v.extend_from_slice(&[2; 6]);
    v.extend_from_slice(&[0x08, 0x06]);
    v.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    v.extend_from_slice(&[0; 20]);
    assert_eq!(decode(LinkType::ETHERNET, &v), Err(SkipReason::NotIp));
}
