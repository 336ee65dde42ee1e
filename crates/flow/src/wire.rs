//! The flow record wire format: one [`FlowRecord`] as a compact, versioned binary message, what a
//! sensor publishes to a message bus (`extract --kafka-brokers`) and a worker decodes.
//!
//! Layout of version 1 (all integers little-endian, no padding):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `MFR` followed by the version byte `1` |
//! | 4 | feature schema id: FNV-1a (32-bit) of the CIC feature names joined by `\n` ([`schema_id`]) |
//! | 1 | flags: bit 0 = IPv6 addresses (else IPv4); other bits must be 0 |
//! | 1 | IP protocol |
//! | 2 + 2 | source port, destination port |
//! | 4 + 4 or 16 + 16 | source address, destination address |
//! | 8 | first packet, µs since the Unix epoch (i64) |
//! | 8 | the sensor's flow sequence number (u64) |
//! | 1 | end reason (index into [`EndReason::ALL`]) |
//! | 8 + 8 | forward and backward frame bytes (u64) |
//! | 2 | feature count (81) |
//! | 8 × count | feature values (f64, IEEE 754) in [`metaids_core::schema::CIC_FLOW_FEATURES`] order |
//!
//! A v4 record is 713 bytes, a v6 record 737; feature vectors are mostly zeros and compress well
//! (the producer's batch compression). Identifiers travel beside the features as they do in a flow
//! CSV and are never features. Decoding checks every length, the version, the schema id, the flags
//! and the end reason, and returns a [`WireError`] naming what is wrong: a worker sends such a
//! record to its dead-letter topic with that reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use metaids_core::schema::CIC_FLOW_FEATURES;
use thiserror::Error;

use crate::engine::{EndReason, FlowRecord};
use crate::features::FEATURE_COUNT;

/// The first three bytes of every record.
pub const MAGIC: [u8; 3] = *b"MFR";
/// The version this build writes and reads.
pub const VERSION: u8 = 1;
/// Length of a version 1 record with IPv4 addresses.
pub const V4_LEN: usize = FIXED_LEN + 8 + FEATURE_COUNT * 8;
/// Length of a version 1 record with IPv6 addresses.
pub const V6_LEN: usize = FIXED_LEN + 32 + FEATURE_COUNT * 8;
/// Bytes of a record other than the addresses and the feature values.
const FIXED_LEN: usize = 4 + 4 + 1 + 1 + 2 + 2 + 8 + 8 + 1 + 8 + 8 + 2;

/// Why a message is not a flow record this build can score.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The message does not start with `MFR`.
    #[error("not a metaids flow record: the message starts with {found:02x?}, not \"MFR\"")]
    BadMagic {
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// A version this build does not read.
    #[error("flow record version {found}; this build reads version {VERSION}")]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// The features are of another schema (another feature list or order).
    #[error("flow record schema {found:08x}; this build's CIC feature schema is {expected:08x}")]
    Schema {
        /// The schema id found.
        found: u32,
        /// This build's [`schema_id`].
        expected: u32,
    },
    /// The message is shorter or longer than its header says.
    #[error("flow record of {found} bytes; its header needs exactly {expected}")]
    Length {
        /// Bytes found.
        found: usize,
        /// Bytes the header implies.
        expected: usize,
    },
    /// A field holds a value outside its range.
    #[error("flow record field {field}: {message}")]
    Field {
        /// The field's name.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// FNV-1a (32-bit) of the CIC feature names joined by `\n`: changes whenever the feature list or
/// its order does, so a worker never scores a sensor's features under another contract.
pub fn schema_id() -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (i, name) in CIC_FLOW_FEATURES.iter().enumerate() {
        if i > 0 {
            h = (h ^ u32::from(b'\n')).wrapping_mul(0x0100_0193);
        }
        for b in name.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Appends `record`'s encoding to `out` (cleared first), reusing its allocation.
pub fn encode_into(record: &FlowRecord, out: &mut Vec<u8>) {
    out.clear();
    let v6 = record.src.is_ipv6() || record.dst.is_ipv6();
    out.reserve(if v6 { V6_LEN } else { V4_LEN });
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&schema_id().to_le_bytes());
    out.push(u8::from(v6));
    out.push(record.protocol);
    out.extend_from_slice(&record.src_port.to_le_bytes());
    out.extend_from_slice(&record.dst_port.to_le_bytes());
    for ip in [record.src, record.dst] {
        match (ip, v6) {
            (IpAddr::V4(a), false) => out.extend_from_slice(&a.octets()),
            (IpAddr::V4(a), true) => out.extend_from_slice(&a.to_ipv6_mapped().octets()),
            (IpAddr::V6(a), _) => out.extend_from_slice(&a.octets()),
        }
    }
    out.extend_from_slice(&record.start_us.to_le_bytes());
    out.extend_from_slice(&record.id.to_le_bytes());
    let reason = EndReason::ALL
        .iter()
        .position(|r| *r == record.end_reason)
        .unwrap_or(0) as u8;
    out.push(reason);
    out.extend_from_slice(&record.fwd_frame_bytes.to_le_bytes());
    out.extend_from_slice(&record.bwd_frame_bytes.to_le_bytes());
    out.extend_from_slice(&(FEATURE_COUNT as u16).to_le_bytes());
    for v in &record.features {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// `record`'s encoding.
pub fn encode(record: &FlowRecord) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(record, &mut out);
    out
}

/// A cursor over a message whose length has been checked.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        head.try_into().unwrap_or([0; N])
    }
}

/// Decodes one message. The addresses of a record whose two ends are IPv4 written as IPv6 (a v4
/// end beside a v6 end) come back as written: IPv4-mapped IPv6.
pub fn decode(bytes: &[u8]) -> Result<FlowRecord, WireError> {
    if bytes.len() < 4 || bytes[..3] != MAGIC {
        return Err(WireError::BadMagic {
            found: bytes[..bytes.len().min(4)].to_vec(),
        });
    }
    if bytes[3] != VERSION {
        return Err(WireError::Version { found: bytes[3] });
    }
    if bytes.len() < 9 {
        return Err(WireError::Length {
            found: bytes.len(),
            expected: V4_LEN,
        });
    }
    let found = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if found != schema_id() {
        return Err(WireError::Schema {
            found,
            expected: schema_id(),
        });
    }
    let flags = bytes[8];
    if flags & !1 != 0 {
        return Err(WireError::Field {
            field: "flags",
            message: format!("unknown bits set in {flags:#04x}"),
        });
    }
    let v6 = flags & 1 == 1;
    let expected = if v6 { V6_LEN } else { V4_LEN };
    if bytes.len() != expected {
        return Err(WireError::Length {
            found: bytes.len(),
            expected,
        });
    }
    let mut c = Cursor { bytes: &bytes[9..] };
    let [protocol] = c.take::<1>();
    let src_port = u16::from_le_bytes(c.take());
    let dst_port = u16::from_le_bytes(c.take());
    let addr = |c: &mut Cursor<'_>| -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(c.take::<16>()))
        } else {
            IpAddr::V4(Ipv4Addr::from(c.take::<4>()))
        }
    };
    let src = addr(&mut c);
    let dst = addr(&mut c);
    let start_us = i64::from_le_bytes(c.take());
    let id = u64::from_le_bytes(c.take());
    let [reason] = c.take::<1>();
    let end_reason = *EndReason::ALL
        .get(usize::from(reason))
        .ok_or_else(|| WireError::Field {
            field: "end reason",
            message: format!(
                "{reason} is not one of the {} reasons",
                EndReason::ALL.len()
            ),
        })?;
    let fwd_frame_bytes = u64::from_le_bytes(c.take());
    let bwd_frame_bytes = u64::from_le_bytes(c.take());
    let count = u16::from_le_bytes(c.take());
    if usize::from(count) != FEATURE_COUNT {
        return Err(WireError::Field {
            field: "feature count",
            message: format!("{count}, expected {FEATURE_COUNT}"),
        });
    }
    let mut features = [0.0; FEATURE_COUNT];
    for (i, f) in features.iter_mut().enumerate() {
        *f = f64::from_le_bytes(c.take());
        if f.is_nan() {
            return Err(WireError::Field {
                field: CIC_FLOW_FEATURES[i],
                message: "NaN".into(),
            });
        }
    }
    Ok(FlowRecord {
        id,
        src,
        src_port,
        dst,
        dst_port,
        protocol,
        start_us,
        end_reason,
        features,
        fwd_frame_bytes,
        bwd_frame_bytes,
    })
}

/// A partitioning key for `record`: FNV-1a (64-bit) of its two endpoints and protocol, taken in
/// a fixed order so both directions of a conversation share a key (and so a partition).
pub fn partition_key(record: &FlowRecord) -> [u8; 8] {
    let a = (record.src, record.src_port);
    let b = (record.dst, record.dst_port);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &x in bytes {
            h = (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (ip, port) in [lo, hi] {
        match ip {
            IpAddr::V4(a) => eat(&a.octets()),
            IpAddr::V6(a) => eat(&a.octets()),
        }
        eat(&port.to_be_bytes());
    }
    eat(&[record.protocol]);
    h.to_be_bytes()
}

/// A partitioning key for `record` by its source (the flow's initiator): FNV-1a (64-bit) of the
/// source address alone, so every flow a source opens lands in one partition and the worker that
/// owns it counts the source's context (`metaids_core::context`) over all of them, as `detect`
/// does over a whole capture.
pub fn source_key(record: &FlowRecord) -> [u8; 8] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes: &[u8] = match &record.src {
        IpAddr::V4(a) => &a.octets(),
        IpAddr::V6(a) => &a.octets(),
    };
    for &x in bytes {
        h = (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(src: IpAddr, dst: IpAddr) -> FlowRecord {
        let mut features = [0.0; FEATURE_COUNT];
        for (i, f) in features.iter_mut().enumerate() {
            *f = i as f64 * 1.5 - 3.0;
        }
        features[7] = f64::INFINITY;
        FlowRecord {
            id: 42,
            src,
            src_port: 51_000,
            dst,
            dst_port: 443,
            protocol: 6,
            start_us: 1_499_000_000_123_456,
            end_reason: EndReason::IdleTimeout,
            features,
            fwd_frame_bytes: 1234,
            bwd_frame_bytes: 98_765,
        }
    }

    #[test]
    fn round_trips_v4_and_v6_with_their_lengths() {
        let v4 = record(
            "10.0.0.1".parse().expect("address"),
            "10.0.0.2".parse().expect("address"),
        );
        let bytes = encode(&v4);
        assert_eq!(bytes.len(), V4_LEN);
        assert_eq!(decode(&bytes).expect("decodes"), v4);
        let v6 = record(
            "fe80::1".parse().expect("address"),
            "2001:db8::2".parse().expect("address"),
        );
        let bytes = encode(&v6);
        assert_eq!(bytes.len(), V6_LEN);
        assert_eq!(decode(&bytes).expect("decodes"), v6);
    }

    #[test]
    fn every_damage_is_named() {
        let r = record(
            "10.0.0.1".parse().expect("address"),
            "10.0.0.2".parse().expect("address"),
        );
        let good = encode(&r);
        assert!(matches!(
            decode(b"{\"json\":1}"),
            Err(WireError::BadMagic { .. })
        ));
        let mut v = good.clone();
        v[3] = 2;
        assert_eq!(decode(&v), Err(WireError::Version { found: 2 }));
        let mut v = good.clone();
        v[4] ^= 1;
        assert!(matches!(decode(&v), Err(WireError::Schema { .. })));
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(WireError::Length {
                expected: V4_LEN,
                ..
            })
        ));
        let mut v = good.clone();
        v[8] = 0x80;
        assert!(matches!(
            decode(&v),
            Err(WireError::Field { field: "flags", .. })
        ));
        let mut v = good.clone();
        v[8 + 1 + 1 + 4 + 8 + 8 + 8] = 9; // flags, protocol, ports, addresses, start, id
        assert!(matches!(
            decode(&v),
            Err(WireError::Field {
                field: "end reason",
                ..
            })
        ));
        let mut v = good;
        let at = V4_LEN - 8;
        v[at..].copy_from_slice(&f64::NAN.to_le_bytes());
        let e = decode(&v).expect_err("refused");
        assert!(e.to_string().contains(CIC_FLOW_FEATURES[80]), "{e}");
    }

    #[test]
    fn a_sources_flows_share_a_source_key() {
        let src: IpAddr = "10.0.0.7".parse().expect("ip");
        let mut a = record(src, "10.0.0.1".parse().expect("ip"));
        let mut b = record(src, "192.168.1.9".parse().expect("ip"));
        (a.src_port, a.dst_port, a.protocol) = (40_000, 80, 6);
        (b.src_port, b.dst_port, b.protocol) = (53_111, 53, 17);
        assert_eq!(source_key(&a), source_key(&b));
        assert_ne!(partition_key(&a), partition_key(&b));
        // Another source, or the reply direction's initiator, is another key.
        let c = record("10.0.0.8".parse().expect("ip"), a.dst);
        assert_ne!(source_key(&a), source_key(&c));
        let v6 = record("fd00::7".parse().expect("ip"), a.dst);
        assert_ne!(source_key(&a), source_key(&v6));
    }

    #[test]
    fn both_directions_share_a_partition_key() {
        let a = record(
            "10.0.0.1".parse().expect("address"),
            "10.0.0.2".parse().expect("address"),
        );
        let mut b = a.clone();
        std::mem::swap(&mut b.src, &mut b.dst);
        std::mem::swap(&mut b.src_port, &mut b.dst_port);
        assert_eq!(partition_key(&a), partition_key(&b));
        b.protocol = 17;
        assert_ne!(partition_key(&a), partition_key(&b));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn any_record_round_trips(
            v6 in any::<bool>(), a in any::<[u8; 16]>(), b in any::<[u8; 16]>(),
            ports in any::<(u16, u16)>(), proto in any::<u8>(), start in any::<i64>(),
            id in any::<u64>(), reason in 0usize..6, bytes in any::<(u64, u64)>(),
            values in proptest::collection::vec(any::<f64>().prop_filter("not NaN", |v| !v.is_nan()), FEATURE_COUNT),
        ) {
            let ip = |o: [u8; 16]| if v6 {
                IpAddr::V6(Ipv6Addr::from(o))
            } else {
                IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
            };
            let mut r = record(ip(a), ip(b));
            r.src_port = ports.0;
            r.dst_port = ports.1;
            r.protocol = proto;
            r.start_us = start;
            r.id = id;
            r.end_reason = EndReason::ALL[reason];
            r.fwd_frame_bytes = bytes.0;
            r.bwd_frame_bytes = bytes.1;
            r.features.copy_from_slice(&values);
            prop_assert_eq!(decode(&encode(&r)).expect("decodes"), r);
        }
    }
}
