//! The crate's single error type. It describes what went wrong and where; it does not log or recover.

use thiserror::Error;

/// Everything that can go wrong while reading a capture or writing flows.
///
/// Per-packet decoding problems are *not* errors: they are counted skips
/// (see [`crate::SkipReason`]). Errors are reserved for conditions that stop a
/// capture stream or an output sink.
#[derive(Debug, Error)]
pub enum FlowError {
    /// The first bytes of the input are neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng capture: unrecognised magic {magic:02x?}")]
    BadMagic {
        /// The first (up to four) bytes that were read.
        magic: Vec<u8>,
    },
    /// The input ended before a complete file header could be read.
    #[error("capture too short: {len} bytes, a file header needs at least {needed}")]
    TooShort {
        /// Bytes available.
        len: usize,
        /// Bytes needed for the header.
        needed: usize,
    },
    /// A record (pcap) or block (pcapng) declares a length above the configured cap.
    #[error("record at byte offset {offset} declares {len} bytes, above the cap of {max} bytes")]
    RecordTooLarge {
        /// Byte offset of the record in the capture.
        offset: u64,
        /// Declared length in bytes.
        len: u64,
        /// The cap ([`crate::ReaderConfig::max_record_len`]).
        max: usize,
    },
    /// The capture ends in the middle of a record (a cut or still-being-written file).
    /// All complete records before it have been returned.
    #[error("capture truncated: record at byte offset {offset} is incomplete")]
    Truncated {
        /// Byte offset of the incomplete record.
        offset: u64,
    },
    /// The capture bytes do not parse as a record or block.
    #[error("malformed capture at byte offset {offset}: {detail}")]
    Malformed {
        /// Byte offset where parsing failed.
        offset: u64,
        /// The parser's description of the problem.
        detail: String,
    },
    /// The underlying reader failed.
    #[error("I/O error while reading the capture at byte offset {offset}: {source}")]
    Read {
        /// Byte offset reached when the read failed.
        offset: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing flow records to the output sink failed.
    #[error("I/O error while writing flow records: {0}")]
    Write(#[source] std::io::Error),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A flow source other than a capture file failed (e.g. libpcap reading a live interface).
    #[error("{name}: {source}")]
    Source {
        /// The source's name.
        name: String,
        /// Its error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
