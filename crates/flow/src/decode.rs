//! Packet decoding: link layer (Ethernet with VLAN/QinQ, Linux SLL v1/v2, raw IP, BSD loopback)
//! and IPv4/IPv6 (options, extension headers, fragments) with etherparse, then the TCP, UDP and
//! ICMP fields the flow features need. It does not track flows or reassemble fragments.
//!
//! Lengths follow CICFlowMeter: the *payload* of a packet is the transport payload as declared
//! by the IP length fields (Ethernet padding excluded, snap-length truncation not subtracted);
//! the *header* length is the TCP header (data offset × 4) or 8 for UDP. For ICMP and other IP
//! protocols both are 0, as in the corrected CIC-IDS2017 data.

use std::net::IpAddr;

use etherparse::{EtherType, IpNumber, LaxNetSlice, LaxSlicedPacket, TcpHeaderSlice};

use crate::capture::LinkType;

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// Why a frame produced no flow update. Each reason has a counter in [`crate::EngineStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The link type is not one this crate decodes.
    UnsupportedLinkType,
    /// The link-layer header is truncated or malformed.
    MalformedLink,
    /// The frame carries no IP (ARP, LLDP, STP, ...).
    NotIp,
    /// The IP header is truncated or malformed.
    MalformedIp,
    /// The TCP/UDP/ICMP header is truncated or malformed.
    MalformedTransport,
}

impl SkipReason {
    /// Every reason, in counter order.
    pub const ALL: [SkipReason; 5] = [
        SkipReason::UnsupportedLinkType,
        SkipReason::MalformedLink,
        SkipReason::NotIp,
        SkipReason::MalformedIp,
        SkipReason::MalformedTransport,
    ];

    /// A short snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::UnsupportedLinkType => "unsupported_link_type",
            SkipReason::MalformedLink => "malformed_link",
            SkipReason::NotIp => "not_ip",
            SkipReason::MalformedIp => "malformed_ip",
            SkipReason::MalformedTransport => "malformed_transport",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The fields of one IP packet that the flow engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 for port-less protocols and non-first fragments).
    pub src_port: u16,
    /// Destination port (0 for port-less protocols and non-first fragments).
    pub dst_port: u16,
    /// IP protocol number (after IPv6 extension headers).
    pub protocol: u8,
    /// Transport payload bytes (see the module doc).
    pub payload_len: u32,
    /// Transport header bytes (TCP data offset × 4, UDP 8, otherwise 0).
    pub header_len: u32,
    /// TCP flags (see [`tcp_flags`]); 0 for non-TCP.
    pub tcp_flags: u8,
    /// TCP window (unscaled); 0 for non-TCP.
    pub tcp_window: u16,
    /// ICMP / ICMPv6 `(type, code)`.
    pub icmp: Option<(u8, u8)>,
    /// Whether the packet is an IP fragment (first or later).
    pub fragment: bool,
    /// Whether the IPv4 header carries options.
    pub ipv4_options: bool,
    /// Whether IPv6 extension headers were present.
    pub ipv6_ext: bool,
    /// Number of VLAN tags seen.
    pub vlan_tags: u8,
}

impl PacketInfo {
    /// A packet of `protocol` from `src` to `dst` with every other field zero or unset (for
    /// callers that build packets by hand, such as tests).
    pub fn new(src: IpAddr, dst: IpAddr, protocol: u8) -> Self {
        PacketInfo {
            src,
            dst,
            src_port: 0,
            dst_port: 0,
            protocol,
            payload_len: 0,
            header_len: 0,
            tcp_flags: 0,
            tcp_window: 0,
            icmp: None,
            fragment: false,
            ipv4_options: false,
            ipv6_ext: false,
            vlan_tags: 0,
        }
    }

    /// Whether the given TCP flag bit is set.
    pub fn has(&self, flag: u8) -> bool {
        self.tcp_flags & flag != 0
    }
}

/// A TCP segment's place in its stream and its captured payload (for stream reassembly, e.g. of
/// HTTP requests; the flow engine needs only [`PacketInfo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    /// Sequence number of the segment (of its first payload byte, or of the SYN).
    pub seq: u32,
    /// The payload bytes captured: shorter than `PacketInfo::payload_len` when a snap length cut
    /// the frame.
    pub payload: &'a [u8],
}

/// Decodes one captured frame.
pub fn decode(link: LinkType, data: &[u8]) -> Result<PacketInfo, SkipReason> {
    decode_segment(link, data).map(|(info, _)| info)
}

/// Decodes one captured frame as [`decode`] does, with the TCP segment when it is TCP (not a
/// later fragment).
pub fn decode_segment(
    link: LinkType,
    data: &[u8],
) -> Result<(PacketInfo, Option<TcpSegment<'_>>), SkipReason> {
    let sliced = match link {
        LinkType::ETHERNET => {
            LaxSlicedPacket::from_ethernet(data).map_err(|_| SkipReason::MalformedLink)?
        }
        LinkType::RAW
        | LinkType::RAW_BSD12
        | LinkType::RAW_BSD14
        | LinkType::IPV4
        | LinkType::IPV6 => LaxSlicedPacket::from_ip(data).map_err(|_| SkipReason::MalformedIp)?,
        LinkType::LINUX_SLL => {
            let proto = data.get(14..16).ok_or(SkipReason::MalformedLink)?;
            let et = u16::from_be_bytes([proto[0], proto[1]]);
            LaxSlicedPacket::from_ether_type(EtherType(et), &data[16..])
        }
        LinkType::LINUX_SLL2 => {
            if data.len() < 20 {
                return Err(SkipReason::MalformedLink);
            }
            let et = u16::from_be_bytes([data[0], data[1]]);
            LaxSlicedPacket::from_ether_type(EtherType(et), &data[20..])
        }
        LinkType::NULL | LinkType::LOOP => {
            let fam: [u8; 4] = data
                .get(0..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(SkipReason::MalformedLink)?;
            let family = if link == LinkType::LOOP {
                u32::from_be_bytes(fam)
            } else {
                // Host byte order of the capturing machine: whichever reading is small.
                let le = u32::from_le_bytes(fam);
                if le > 0xffff {
                    u32::from_be_bytes(fam)
                } else {
                    le
                }
            };
            match family {
                2 | 24 | 28 | 30 => {
                    LaxSlicedPacket::from_ip(&data[4..]).map_err(|_| SkipReason::MalformedIp)?
                }
                _ => return Err(SkipReason::NotIp),
            }
        }
        _ => return Err(SkipReason::UnsupportedLinkType),
    };
    let vlan_tags = sliced
        .link_exts
        .iter()
        .filter(|e| matches!(e, etherparse::LaxLinkExtSlice::Vlan(_)))
        .count() as u8;
    let net = match sliced.net {
        Some(n) => n,
        None => {
            return Err(match sliced.stop_err {
                Some((_, layer)) => {
                    use etherparse::err::Layer;
                    match layer {
                        Layer::IpHeader
                        | Layer::Ipv4Header
                        | Layer::Ipv4Packet
                        | Layer::Ipv6Header
                        | Layer::Ipv6Packet => SkipReason::MalformedIp,
                        Layer::Ethernet2Header
                        | Layer::VlanHeader
                        | Layer::LinuxSllHeader
                        | Layer::MacsecHeader => SkipReason::MalformedLink,
                        _ => SkipReason::NotIp,
                    }
                }
                None => SkipReason::NotIp,
            })
        }
    };
    let (src, dst, payload, wire_payload_len, first_fragment, ipv4_options, ipv6_ext) = match &net {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            let p = v4.payload();
            let ihl_len = usize::from(h.ihl()) * 4;
            let declared = usize::from(h.total_len()).saturating_sub(ihl_len);
            let wire = if p.incomplete && declared > p.payload.len() {
                declared
            } else {
                p.payload.len()
            };
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                p,
                wire,
                h.fragments_offset().value() == 0,
                h.ihl() > 5,
                false,
            )
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            let p = v6.payload();
            let ext_len = v6.extensions().slice().len();
            let declared = usize::from(h.payload_length()).saturating_sub(ext_len);
            let wire = if p.incomplete && declared > p.payload.len() {
                declared
            } else {
                p.payload.len()
            };
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                p,
                wire,
                false,
                false,
                !v6.extensions().is_empty(),
            )
        }
        LaxNetSlice::Arp(_) => return Err(SkipReason::NotIp),
    };
    let fragment = payload.fragmented;
    let protocol = payload.ip_number.0;
    let mut info = PacketInfo {
        fragment,
        ipv4_options,
        ipv6_ext,
        vlan_tags,
        ..PacketInfo::new(src, dst, protocol)
    };
    // Later fragments carry no transport header: a port-less packet of the same protocol.
    if fragment && !first_fragment {
        return Ok((info, None));
    }
    let mut segment = None;
    let bytes = payload.payload;
    match payload.ip_number {
        IpNumber::TCP => {
            let tcp =
                TcpHeaderSlice::from_slice(bytes).map_err(|_| SkipReason::MalformedTransport)?;
            let hlen = usize::from(tcp.data_offset()) * 4;
            info.src_port = tcp.source_port();
            info.dst_port = tcp.destination_port();
            info.header_len = hlen as u32;
            info.payload_len = wire_payload_len.saturating_sub(hlen) as u32;
            info.tcp_flags = bytes[13];
            info.tcp_window = tcp.window_size();
            segment = Some(TcpSegment {
                seq: tcp.sequence_number(),
                payload: bytes.get(hlen..).unwrap_or(&[]),
            });
        }
        IpNumber::UDP => {
            let b = bytes.get(0..8).ok_or(SkipReason::MalformedTransport)?;
            info.src_port = u16::from_be_bytes([b[0], b[1]]);
            info.dst_port = u16::from_be_bytes([b[2], b[3]]);
            info.header_len = 8;
            info.payload_len = wire_payload_len.saturating_sub(8) as u32;
        }
        IpNumber::ICMP | IpNumber::IPV6_ICMP => {
            let b = bytes.get(0..2).ok_or(SkipReason::MalformedTransport)?;
            info.icmp = Some((b[0], b[1]));
        }
        _ => {}
    }
    Ok((info, segment))
}
