//! Streaming capture reader: pcap (both byte orders, micro- and nanosecond) and pcapng
//! (several sections and interfaces, per-interface link type, `if_tsresol` and `if_tsoffset`)
//! over any [`std::io::Read`], in bounded memory. It does not open files or decode packets.
//!
//! Memory is one circular buffer of [`ReaderConfig::buffer_size`] bytes that grows, only when a
//! record needs it, up to [`ReaderConfig::max_record_len`]; a record declaring more is a
//! [`FlowError::RecordTooLarge`] error, never an allocation.

use std::io::{Chain, Cursor, Read};

use pcap_parser::pcapng::Block;
use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGReader};

use crate::error::FlowError;

/// A link-layer header type (the pcap `LINKTYPE_*` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkType(pub u32);

impl LinkType {
    /// BSD loopback (`LINKTYPE_NULL`): 4-byte address family in host byte order.
    pub const NULL: LinkType = LinkType(0);
    /// Ethernet II (`LINKTYPE_ETHERNET`), with optional VLAN / QinQ tags.
    pub const ETHERNET: LinkType = LinkType(1);
    /// Raw IP on some BSDs (`DLT_RAW` = 12).
    pub const RAW_BSD12: LinkType = LinkType(12);
    /// Raw IP on OpenBSD (`DLT_RAW` = 14).
    pub const RAW_BSD14: LinkType = LinkType(14);
    /// Raw IPv4 or IPv6 (`LINKTYPE_RAW`).
    pub const RAW: LinkType = LinkType(101);
    /// OpenBSD loopback (`LINKTYPE_LOOP`): 4-byte address family in network byte order.
    pub const LOOP: LinkType = LinkType(108);
    /// Linux cooked capture v1 (`LINKTYPE_LINUX_SLL`).
    pub const LINUX_SLL: LinkType = LinkType(113);
    /// Raw IPv4 (`LINKTYPE_IPV4`).
    pub const IPV4: LinkType = LinkType(228);
    /// Raw IPv6 (`LINKTYPE_IPV6`).
    pub const IPV6: LinkType = LinkType(229);
    /// Linux cooked capture v2 (`LINKTYPE_LINUX_SLL2`).
    pub const LINUX_SLL2: LinkType = LinkType(276);
}

/// The container format detected from the magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic libpcap file.
    Pcap {
        /// Whether the file is big-endian.
        big_endian: bool,
        /// Whether timestamps are in nanoseconds (magic `a1b23c4d`).
        nanosecond: bool,
    },
    /// pcapng file.
    PcapNg,
}

/// Limits for [`CaptureReader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderConfig {
    /// Initial size of the read buffer in bytes (default 64 KiB, minimum 4 KiB).
    pub buffer_size: usize,
    /// Largest record or block accepted, in bytes, headers included (default 256 KiB + 1 KiB,
    /// enough for the maximum libpcap snap length of 262144). Larger declared lengths are errors.
    pub max_record_len: usize,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            buffer_size: 64 * 1024,
            max_record_len: 262_144 + 1024,
        }
    }
}

/// One captured frame, borrowed from the reader until the next call to
/// [`CaptureReader::next_packet`].
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Link-layer type of `data`.
    pub link_type: LinkType,
    /// Capture timestamp in microseconds since the Unix epoch (nanoseconds are truncated).
    pub ts_us: i64,
    /// The captured bytes (possibly shorter than `orig_len` when a snap length applied).
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub orig_len: u32,
    /// pcapng interface id (0 for pcap).
    pub interface: u32,
}

/// Counters kept by the reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Packet records returned.
    pub packets: u64,
    /// Bytes of the capture consumed.
    pub bytes_consumed: u64,
    /// pcapng packet blocks dropped because they name an interface with no description block.
    pub unknown_interface: u64,
    /// pcapng interface description blocks whose `if_tsresol` is outside the accepted range
    /// (1 s down to 1 ns, see [`units_per_second`]): their packets' timestamps are read as
    /// microseconds, the pcapng default, so they are a guess.
    pub bad_tsresol: u64,
    /// pcapng packets whose timestamp (with the interface's `if_tsoffset`) falls before
    /// 1970-01-01 or after 9999-12-31: the timestamp is clamped to that range.
    pub timestamp_out_of_range: u64,
    /// Non-packet pcapng blocks skipped (statistics, name resolution, custom, unknown, ...).
    pub other_blocks: u64,
}

impl ReaderStats {
    /// Every counter as `(name, value)`, in a fixed order, for summaries.
    pub fn counters(&self) -> [(&'static str, u64); 6] {
        [
            ("packets", self.packets),
            ("bytes_consumed", self.bytes_consumed),
            ("unknown_interface", self.unknown_interface),
            ("bad_tsresol", self.bad_tsresol),
            ("timestamp_out_of_range", self.timestamp_out_of_range),
            ("other_blocks", self.other_blocks),
        ]
    }

    /// One sentence per data-quality problem worth a warning (packets dropped, timestamps
    /// guessed or clamped); empty when there is none. Callers prefix the capture's name.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.unknown_interface > 0 {
            w.push(format!(
                "{} pcapng packet block(s) named an interface with no description block and were dropped",
                self.unknown_interface
            ));
        }
        if self.bad_tsresol > 0 {
            w.push(format!(
                "{} pcapng interface(s) declared an if_tsresol outside 1 s to 1 ns; their timestamps were read as microseconds (a guess)",
                self.bad_tsresol
            ));
        }
        if self.timestamp_out_of_range > 0 {
            w.push(format!(
                "{} pcapng packet timestamp(s) fell outside 1970-01-01 to 9999-12-31 and were clamped",
                self.timestamp_out_of_range
            ));
        }
        w
    }
}

/// The latest packet time accepted, 9999-12-31 23:59:59.999999 UTC, in µs since the epoch.
/// Later (and pre-1970) pcapng timestamps are clamped, so that time arithmetic downstream
/// cannot overflow.
pub const MAX_TIMESTAMP_US: i64 = 253_402_300_799_999_999;

/// Timestamp units per second of a pcapng `if_tsresol` byte, or `None` when it is outside the
/// accepted range.
///
/// The high bit selects a power of two, otherwise a power of ten: `10^-e` or `2^-e` seconds per
/// unit. Accepted: 1 s down to 1 ns, i.e. exponents 0..=9 in decimal and 0..=30 in binary
/// (2^-30 s ≈ 0.93 ns, the binary resolution nearest 1 ns). Finer resolutions make a 64-bit
/// timestamp cover less than 600 years of which none is plausible capture time, and the larger
/// exponents overflow 64 bits; such interfaces are counted in [`ReaderStats::bad_tsresol`].
pub fn units_per_second(tsresol: u8) -> Option<u64> {
    let e = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        (e <= 9).then(|| 10u64.pow(e))
    } else {
        (e <= 30).then(|| 1u64 << e)
    }
}

/// µs since the epoch of a pcapng timestamp of `raw` units, `units_per_sec` units per second,
/// after `offset_sec` seconds of `if_tsoffset`, clamped to `0..=MAX_TIMESTAMP_US`; the flag says
/// whether it was clamped. Computed in 128 bits: nothing overflows or wraps.
fn pcapng_timestamp_us(raw: u64, units_per_sec: u64, offset_sec: i64) -> (i64, bool) {
    let us = i128::from(raw) * 1_000_000 / i128::from(units_per_sec.max(1));
    let t = i128::from(offset_sec) * 1_000_000 + us;
    let clamped = t.clamp(0, i128::from(MAX_TIMESTAMP_US));
    // In range by the clamp; the fallback is never taken.
    (
        i64::try_from(clamped).unwrap_or(MAX_TIMESTAMP_US),
        clamped != t,
    )
}

/// A short description of a parser error: its kind, never the input bytes that pcap-parser's
/// own `Display` appends (which can be the whole rest of the read buffer).
fn describe_parse_error<I>(e: &PcapError<I>) -> String {
    match e {
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("parser error: {}", kind.description())
        }
        PcapError::Eof => "end of file".into(),
        PcapError::BufferTooSmall => "record larger than the read buffer".into(),
        PcapError::UnexpectedEof => "unexpected end of file".into(),
        PcapError::ReadError => "read error".into(),
        PcapError::Incomplete(n) => format!("incomplete record ({n} more bytes needed)"),
        PcapError::HeaderNotRecognized => "header not recognised as pcap or pcapng".into(),
    }
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    link_type: LinkType,
    /// Timestamp units per second.
    units_per_sec: u64,
    /// Seconds added to every timestamp.
    offset_sec: i64,
    snaplen: u32,
}

type Source<R> = Chain<Cursor<Vec<u8>>, R>;

enum Inner<R: Read> {
    Legacy(LegacyPcapReader<Source<R>>),
    Ng(PcapNGReader<Source<R>>),
}

/// What a parsed block amounted to, with every borrow of the parser's buffer released.
enum Step {
    Packet { consumed: usize, meta: PacketMeta },
    Skip { consumed: usize },
    Eof,
    Refill,
    Grow { needed: usize },
    Fail(FlowError),
}

#[derive(Clone, Copy)]
struct PacketMeta {
    link_type: LinkType,
    ts_us: i64,
    orig_len: u32,
    interface: u32,
}

/// Streaming reader of pcap and pcapng captures over any [`Read`].
///
/// ```
/// use metaids_flow::{CaptureReader, ReaderConfig};
/// # fn demo(bytes: &[u8]) -> Result<(), metaids_flow::FlowError> {
/// let mut reader = CaptureReader::new(bytes, ReaderConfig::default())?;
/// while let Some(pkt) = reader.next_packet()? {
///     println!("{} bytes at {} us on link {:?}", pkt.data.len(), pkt.ts_us, pkt.link_type);
/// }
/// # Ok(()) }
/// ```
pub struct CaptureReader<R: Read> {
    inner: Inner<R>,
    format: CaptureFormat,
    config: ReaderConfig,
    /// Legacy pcap: link type of every record.
    pcap_link: LinkType,
    /// pcapng: interfaces of the current section.
    interfaces: Vec<Interface>,
    /// pcapng: byte order of the current section.
    ng_big_endian: bool,
    capacity: usize,
    packet_buf: Vec<u8>,
    stats: ReaderStats,
    finished: bool,
}

impl<R: Read> CaptureReader<R> {
    /// Detects the format from the magic number and reads the file header.
    ///
    /// Errors: [`FlowError::BadMagic`], [`FlowError::TooShort`], [`FlowError::Malformed`],
    /// [`FlowError::Read`], [`FlowError::Config`].
    pub fn new(mut reader: R, config: ReaderConfig) -> Result<Self, FlowError> {
        if config.buffer_size < 4096 || config.max_record_len < 64 {
            return Err(FlowError::Config(format!(
                "buffer_size must be >= 4096 and max_record_len >= 64 (got {} and {})",
                config.buffer_size, config.max_record_len
            )));
        }
        let capacity = config
            .buffer_size
            .max(64 * 1024)
            .min(config.max_record_len.max(4096) * 2);
        // Read a prefix so that the whole file header is in the parser's first read.
        let mut prefix = vec![0u8; capacity];
        let mut filled = 0;
        while filled < prefix.len() {
            match reader.read(&mut prefix[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(FlowError::Read {
                        offset: filled as u64,
                        source,
                    })
                }
            }
        }
        prefix.truncate(filled);
        if prefix.len() < 4 {
            return Err(FlowError::TooShort {
                len: prefix.len(),
                needed: 24,
            });
        }
        let magic = [prefix[0], prefix[1], prefix[2], prefix[3]];
        let format = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] | [0x34, 0xcd, 0xb2, 0xa1] => CaptureFormat::Pcap {
                big_endian: false,
                nanosecond: false,
            },
            [0x4d, 0x3c, 0xb2, 0xa1] => CaptureFormat::Pcap {
                big_endian: false,
                nanosecond: true,
            },
            [0xa1, 0xb2, 0xc3, 0xd4] => CaptureFormat::Pcap {
                big_endian: true,
                nanosecond: false,
            },
            [0xa1, 0xb2, 0x3c, 0x4d] => CaptureFormat::Pcap {
                big_endian: true,
                nanosecond: true,
            },
            [0x0a, 0x0d, 0x0d, 0x0a] => CaptureFormat::PcapNg,
            _ => {
                return Err(FlowError::BadMagic {
                    magic: magic.to_vec(),
                })
            }
        };
        let needed = match format {
            CaptureFormat::Pcap { .. } => 24,
            CaptureFormat::PcapNg => 28,
        };
        if prefix.len() < needed {
            return Err(FlowError::TooShort {
                len: prefix.len(),
                needed,
            });
        }
        let ng_big_endian =
            matches!(format, CaptureFormat::PcapNg) && prefix[8..12] == [0x1a, 0x2b, 0x3c, 0x4d];
        let source = Cursor::new(prefix).chain(reader);
        let header_err = |e: PcapError<&'static [u8]>| match e {
            PcapError::Incomplete(_) | PcapError::UnexpectedEof => {
                FlowError::Truncated { offset: 0 }
            }
            other => FlowError::Malformed {
                offset: 0,
                detail: format!("file header: {}", describe_parse_error(&other)),
            },
        };
        let (inner, pcap_link) = match format {
            CaptureFormat::Pcap { .. } => {
                let mut r = LegacyPcapReader::new(capacity, source).map_err(header_err)?;
                // The first block is always the header, returned without parsing errors.
                let link = match r.next() {
                    Ok((_, PcapBlockOwned::LegacyHeader(h))) => LinkType(h.network.0 as u32),
                    _ => {
                        return Err(FlowError::Malformed {
                            offset: 0,
                            detail: "pcap file header".into(),
                        })
                    }
                };
                r.consume(24);
                (Inner::Legacy(r), link)
            }
            CaptureFormat::PcapNg => {
                let r = PcapNGReader::new(capacity, source).map_err(header_err)?;
                (Inner::Ng(r), LinkType::ETHERNET)
            }
        };
        let stats = ReaderStats {
            bytes_consumed: if matches!(inner, Inner::Legacy(_)) {
                24
            } else {
                0
            },
            ..ReaderStats::default()
        };
        Ok(CaptureReader {
            inner,
            format,
            config,
            pcap_link,
            interfaces: Vec::new(),
            ng_big_endian,
            capacity,
            packet_buf: Vec::with_capacity(2048),
            stats,
            finished: false,
        })
    }

    /// The detected container format.
    pub fn format(&self) -> CaptureFormat {
        self.format
    }

    /// Counters so far.
    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// The link type of a classic pcap file (for pcapng: of interface 0, if described yet).
    pub fn link_type(&self) -> Option<LinkType> {
        match self.inner {
            Inner::Legacy(_) => Some(self.pcap_link),
            Inner::Ng(_) => self.interfaces.first().map(|i| i.link_type),
        }
    }

    /// Returns the next packet record, `Ok(None)` at the end of the capture.
    ///
    /// After an error the reader is finished: further calls return `Ok(None)`. A capture cut in
    /// the middle of a record yields every complete record, then [`FlowError::Truncated`].
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, FlowError> {
        if self.finished {
            return Ok(None);
        }
        loop {
            let step = self.step();
            match step {
                Step::Packet { consumed, meta } => {
                    self.consume(consumed);
                    self.stats.packets += 1;
                    return Ok(Some(Packet {
                        link_type: meta.link_type,
                        ts_us: meta.ts_us,
                        data: &self.packet_buf,
                        orig_len: meta.orig_len,
                        interface: meta.interface,
                    }));
                }
                Step::Skip { consumed } => self.consume(consumed),
                Step::Eof => {
                    self.finished = true;
                    return Ok(None);
                }
                Step::Refill => {
                    let offset = self.stats.bytes_consumed;
                    let res = self.reader().refill();
                    if res.is_err() {
                        self.finished = true;
                        return Err(FlowError::Read {
                            offset,
                            source: std::io::Error::other("the underlying reader failed"),
                        });
                    }
                }
                Step::Grow { needed } => {
                    let new_cap = needed
                        .next_power_of_two()
                        .max(self.capacity * 2)
                        .min(self.config.max_record_len * 2);
                    if new_cap <= self.capacity || !self.reader().grow(new_cap) {
                        self.finished = true;
                        return Err(FlowError::RecordTooLarge {
                            offset: self.stats.bytes_consumed,
                            len: needed as u64,
                            max: self.config.max_record_len,
                        });
                    }
                    self.capacity = new_cap;
                    let offset = self.stats.bytes_consumed;
                    if self.reader().refill().is_err() {
                        self.finished = true;
                        return Err(FlowError::Read {
                            offset,
                            source: std::io::Error::other("the underlying reader failed"),
                        });
                    }
                }
                Step::Fail(e) => {
                    self.finished = true;
                    return Err(e);
                }
            }
        }
    }

    fn reader(&mut self) -> &mut dyn PcapReaderIterator {
        match &mut self.inner {
            Inner::Legacy(r) => r,
            Inner::Ng(r) => r,
        }
    }

    fn consume(&mut self, n: usize) {
        self.reader().consume(n);
        self.stats.bytes_consumed += n as u64;
    }

    /// Parses one block and turns it into an owned [`Step`], copying packet bytes into
    /// `packet_buf`.
    fn step(&mut self) -> Step {
        let offset = self.stats.bytes_consumed;
        let max = self.config.max_record_len;
        let capacity = self.capacity;
        let ng_big_endian = self.ng_big_endian;
        let big_endian_pcap = matches!(
            self.format,
            CaptureFormat::Pcap {
                big_endian: true,
                ..
            }
        );
        let nanos = matches!(
            self.format,
            CaptureFormat::Pcap {
                nanosecond: true,
                ..
            }
        );
        let pcap_link = self.pcap_link;
        let (reader, buf, interfaces, stats): (&mut dyn PcapReaderIterator, _, _, _) =
            match &mut self.inner {
                Inner::Legacy(r) => (
                    r,
                    &mut self.packet_buf,
                    &mut self.interfaces,
                    &mut self.stats,
                ),
                Inner::Ng(r) => (
                    r,
                    &mut self.packet_buf,
                    &mut self.interfaces,
                    &mut self.stats,
                ),
            };
        let mut new_endianness = None;
        let step = match reader.next() {
            Ok((consumed, block)) => {
                if consumed > max {
                    return Step::Fail(FlowError::RecordTooLarge {
                        offset,
                        len: consumed as u64,
                        max,
                    });
                }
                match block {
                    PcapBlockOwned::LegacyHeader(_) => Step::Skip { consumed },
                    PcapBlockOwned::Legacy(b) => {
                        buf.clear();
                        buf.extend_from_slice(b.data);
                        let frac = if nanos { b.ts_usec / 1000 } else { b.ts_usec };
                        Step::Packet {
                            consumed,
                            meta: PacketMeta {
                                link_type: pcap_link,
                                ts_us: i64::from(b.ts_sec) * 1_000_000 + i64::from(frac),
                                orig_len: b.origlen,
                                interface: 0,
                            },
                        }
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                        interfaces.clear();
                        new_endianness = Some(shb.big_endian());
                        Step::Skip { consumed }
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        // Decoded here, not with `ts_resolution()`, which refuses every
                        // binary (power of two) resolution.
                        let units_per_sec = match units_per_second(idb.if_tsresol) {
                            Some(u) => u,
                            None => {
                                stats.bad_tsresol += 1;
                                1_000_000
                            }
                        };
                        interfaces.push(Interface {
                            link_type: LinkType(idb.linktype.0 as u32),
                            units_per_sec,
                            offset_sec: idb.ts_offset(),
                            snaplen: idb.snaplen,
                        });
                        Step::Skip { consumed }
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        match interfaces.get(epb.if_id as usize) {
                            Some(iface) => {
                                buf.clear();
                                buf.extend_from_slice(epb.packet_data());
                                let raw = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                                let (ts_us, clamped) =
                                    pcapng_timestamp_us(raw, iface.units_per_sec, iface.offset_sec);
                                stats.timestamp_out_of_range += u64::from(clamped);
                                Step::Packet {
                                    consumed,
                                    meta: PacketMeta {
                                        link_type: iface.link_type,
                                        ts_us,
                                        orig_len: epb.origlen,
                                        interface: epb.if_id,
                                    },
                                }
                            }
                            None => {
                                stats.unknown_interface += 1;
                                Step::Skip { consumed }
                            }
                        }
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => match interfaces.first() {
                        Some(iface) => {
                            let data = spb.packet_data();
                            let snap = if iface.snaplen == 0 {
                                data.len()
                            } else {
                                iface.snaplen as usize
                            };
                            let n = data.len().min(snap).min(spb.origlen as usize);
                            buf.clear();
                            buf.extend_from_slice(&data[..n]);
                            Step::Packet {
                                consumed,
                                meta: PacketMeta {
                                    link_type: iface.link_type,
                                    ts_us: 0,
                                    orig_len: spb.origlen,
                                    interface: 0,
                                },
                            }
                        }
                        None => {
                            stats.unknown_interface += 1;
                            Step::Skip { consumed }
                        }
                    },
                    PcapBlockOwned::NG(_) => {
                        stats.other_blocks += 1;
                        Step::Skip { consumed }
                    }
                }
            }
            Err(PcapError::Eof) => Step::Eof,
            Err(PcapError::Incomplete(_)) => Step::Refill,
            Err(PcapError::UnexpectedEof) => Step::Fail(FlowError::Truncated { offset }),
            Err(PcapError::BufferTooSmall) => {
                let data = reader.data();
                match declared_len(
                    data,
                    big_endian_pcap,
                    ng_big_endian,
                    pcap_link_is_legacy(&self.format),
                ) {
                    Some(len) if len <= max => Step::Grow {
                        needed: len.max(capacity + 1),
                    },
                    Some(len) => Step::Fail(FlowError::RecordTooLarge {
                        offset,
                        len: len as u64,
                        max,
                    }),
                    None => Step::Fail(FlowError::Malformed {
                        offset,
                        detail: "record header unreadable".into(),
                    }),
                }
            }
            Err(PcapError::ReadError) => Step::Fail(FlowError::Read {
                offset,
                source: std::io::Error::other("the underlying reader failed"),
            }),
            Err(e) => {
                let why = describe_parse_error(&e);
                let what = if pcap_link_is_legacy(&self.format) {
                    "packet record".to_string()
                } else {
                    match reader.data().get(..4) {
                        Some(t) => format!(
                            "pcapng block of type {:#010x}",
                            if ng_big_endian {
                                u32::from_be_bytes([t[0], t[1], t[2], t[3]])
                            } else {
                                u32::from_le_bytes([t[0], t[1], t[2], t[3]])
                            }
                        ),
                        None => "pcapng block".to_string(),
                    }
                };
                Step::Fail(FlowError::Malformed {
                    offset,
                    detail: format!("{what} does not parse ({why})"),
                })
            }
        };
        if let Some(be) = new_endianness {
            self.ng_big_endian = be;
        }
        step
    }
}

fn pcap_link_is_legacy(format: &CaptureFormat) -> bool {
    matches!(format, CaptureFormat::Pcap { .. })
}

/// The total length a record or block at the start of `data` declares, headers included.
fn declared_len(data: &[u8], pcap_be: bool, ng_be: bool, legacy: bool) -> Option<usize> {
    let word = |at: usize, be: bool| -> Option<u32> {
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    if legacy {
        word(8, pcap_be).map(|caplen| caplen as usize + 16)
    } else {
        let block_type = word(0, false)?;
        let be = if block_type == 0x0a0d_0d0a {
            data.get(8..12)? == [0x1a, 0x2b, 0x3c, 0x4d]
        } else {
            ng_be
        };
        word(4, be).map(|l| l as usize)
    }
}
