//! Dataset schemas: which column of each supported file format is a feature, a label or an identifier.
//!
//! This module only names and classifies columns; it reads no bytes. Identifier columns (row ids, flow
//! ids, IP addresses, source ports, timestamps) are classified so that they can be kept for reporting and
//! can never become features.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

use crate::CoreError;

/// A family of datasets that share one feature layout (and so one model input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// NSL-KDD (Tavallaee et al. 2009): 41 KDD'99 connection features.
    NslKdd,
    /// UNSW-NB15 partitioned CSVs (Moustafa & Slay 2015).
    UnswNb15,
    /// CICFlowMeter flows (CIC-IDS2017/2018, corrected or original), in the corrected feature layout.
    Cic,
    /// Web-request payloads (parameter values and attack strings, `data/http/payloads.csv.gz`), as
    /// [`HTTP_SHAPE_FEATURES`] and [`HTTP_NGRAM_BUCKETS`] hashed character n-gram counts
    /// (`metaids_http::features` computes them).
    HttpRequests,
}

/// Shape features of a web-request payload, before its n-gram buckets (see
/// `metaids_http::features`).
pub const HTTP_SHAPE_FEATURES: [&str; 7] = [
    "length",
    "letters",
    "digits",
    "spaces",
    "punctuation",
    "non_ascii",
    "percent_escapes",
];

/// Hashed character n-gram buckets of a web-request payload (`ngram_000`, …).
pub const HTTP_NGRAM_BUCKETS: usize = 256;

impl DatasetKind {
    /// All kinds, in command-line order.
    pub const ALL: [DatasetKind; 4] = [
        DatasetKind::NslKdd,
        DatasetKind::UnswNb15,
        DatasetKind::Cic,
        DatasetKind::HttpRequests,
    ];

    /// The name used on the command line and in split files.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::NslKdd => "nsl-kdd",
            DatasetKind::UnswNb15 => "unsw-nb15",
            DatasetKind::Cic => "cic",
            DatasetKind::HttpRequests => "http-requests",
        }
    }

    /// Parses a command-line dataset name.
    pub fn from_name(name: &str) -> Result<Self, CoreError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| CoreError::UnknownName {
                what: "dataset",
                found: name.to_string(),
                expected: "nsl-kdd, unsw-nb15, cic, http-requests",
            })
    }

    /// The feature layout every file of this kind is read into.
    pub fn layout(self) -> FeatureLayout {
        let (numeric, categorical): (Vec<&str>, Vec<&str>) = match self {
            DatasetKind::NslKdd => (
                NSL_KDD_COLUMNS
                    .iter()
                    .copied()
                    .filter(|c| !NSL_KDD_CATEGORICAL.contains(c))
                    .collect(),
                NSL_KDD_CATEGORICAL.to_vec(),
            ),
            DatasetKind::UnswNb15 => (
                UNSW_FEATURES
                    .iter()
                    .copied()
                    .filter(|c| !UNSW_CATEGORICAL.contains(c) && !UNSW_IDENTIFIER_LIKE.contains(c))
                    .collect(),
                UNSW_CATEGORICAL.to_vec(),
            ),
            DatasetKind::Cic => (CIC_FLOW_FEATURES.to_vec(), CIC_CATEGORICAL.to_vec()),
            DatasetKind::HttpRequests => {
                let mut layout = FeatureLayout::new(self, HTTP_SHAPE_FEATURES.to_vec(), Vec::new());
                layout
                    .numeric
                    .extend((0..HTTP_NGRAM_BUCKETS).map(|i| format!("ngram_{i:03}")));
                return layout;
            }
        };
        FeatureLayout::new(self, numeric, categorical)
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A concrete file format. Several formats may feed one [`DatasetKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormat {
    /// NSL-KDD text: no header, 41 features, label, difficulty.
    NslKdd,
    /// UNSW-NB15 CSV with header (`id`, 42 features, `attack_cat`, `label`).
    UnswNb15,
    /// Corrected CICFlowMeter CSV (Engelen et al. 2021), 91 columns.
    CicImproved,
    /// Original CIC-IDS2017 `MachineLearningCSV`/`TrafficLabelling` or CIC-IDS2018 CSV.
    CicOriginal,
    /// Labelled web-request payloads, `family,source,payload` (`data/http/payloads.csv.gz`): read
    /// by `metaids_http::features`, not by the flow-row reader (a payload is text, not columns).
    HttpPayloads,
}

impl FileFormat {
    /// All formats, in command-line order.
    pub const ALL: [FileFormat; 5] = [
        FileFormat::NslKdd,
        FileFormat::UnswNb15,
        FileFormat::CicImproved,
        FileFormat::CicOriginal,
        FileFormat::HttpPayloads,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FileFormat::NslKdd => "nsl-kdd",
            FileFormat::UnswNb15 => "unsw-nb15",
            FileFormat::CicImproved => "cic-improved",
            FileFormat::CicOriginal => "cic-original",
            FileFormat::HttpPayloads => "http-payloads",
        }
    }

    /// Parses a command-line format name.
    pub fn from_name(name: &str) -> Result<Self, CoreError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| CoreError::UnknownName {
                what: "format",
                found: name.to_string(),
                expected: "nsl-kdd, unsw-nb15, cic-improved, cic-original, http-payloads",
            })
    }

    /// The dataset kind (feature layout) this format is read into.
    pub fn kind(self) -> DatasetKind {
        match self {
            FileFormat::NslKdd => DatasetKind::NslKdd,
            FileFormat::UnswNb15 => DatasetKind::UnswNb15,
            FileFormat::CicImproved | FileFormat::CicOriginal => DatasetKind::Cic,
            FileFormat::HttpPayloads => DatasetKind::HttpRequests,
        }
    }

    /// Whether the first line of a file of this format is a header.
    pub fn has_header(self) -> bool {
        !matches!(self, FileFormat::NslKdd)
    }

    /// Recognises a format from the first line of a file (BOM and surrounding spaces tolerated).
    ///
    /// Returns `None` when the line matches no known format.
    pub fn detect(first_line: &[u8]) -> Option<FileFormat> {
        let line = strip_bom(first_line);
        let line = String::from_utf8_lossy(line);
        let fields: Vec<String> = line
            .trim_end_matches(['\r', '\n'])
            .split(',')
            .map(|f| f.trim().to_string())
            .collect();
        let has = |name: &str| fields.iter().any(|f| f.eq_ignore_ascii_case(name));
        if has("attack_cat") && has("sbytes") {
            return Some(FileFormat::UnswNb15);
        }
        if has("Total TCP Flow Time") && has("Attempted Category") {
            return Some(FileFormat::CicImproved);
        }
        if has("Label") && (has("Flow Duration")) {
            return Some(FileFormat::CicOriginal);
        }
        if fields == ["family", "source", "payload"] {
            return Some(FileFormat::HttpPayloads);
        }
        // NSL-KDD has no header: 43 fields (42 without difficulty, as in KDD'99-style copies is not
        // accepted), the second a protocol name.
        if fields.len() == NSL_KDD_COLUMNS.len() + 2
            && matches!(fields[1].as_str(), "tcp" | "udp" | "icmp")
        {
            return Some(FileFormat::NslKdd);
        }
        None
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Removes a UTF-8 byte-order mark.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// The ordered feature columns of a dataset kind: what a model sees, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureLayout {
    /// The dataset kind this layout belongs to.
    pub kind: DatasetKind,
    /// Numeric feature names, in model order.
    pub numeric: Vec<String>,
    /// Categorical feature names, in model order.
    pub categorical: Vec<String>,
}

impl FeatureLayout {
    fn new(kind: DatasetKind, numeric: Vec<&str>, categorical: Vec<&str>) -> Self {
        FeatureLayout {
            kind,
            numeric: numeric.into_iter().map(str::to_string).collect(),
            categorical: categorical.into_iter().map(str::to_string).collect(),
        }
    }

    /// A stable hash of the layout (kind, then every column name and role), hex-encoded sha256.
    ///
    /// Two layouts with the same hash feed a model identically.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"metaids-feature-layout-v1\n");
        h.update(self.kind.name().as_bytes());
        for n in &self.numeric {
            h.update(b"\nnum:");
            h.update(n.as_bytes());
        }
        for c in &self.categorical {
            h.update(b"\ncat:");
            h.update(c.as_bytes());
        }
        hex(&h.finalize())
    }
}

/// Lower-case hex encoding.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The role of one input column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnRole {
    /// The i-th numeric feature of the layout.
    Numeric(usize),
    /// The j-th categorical feature of the layout.
    Categorical(usize),
    /// The family (attack name) label.
    Label,
    /// A binary 0/1 attack label (UNSW-NB15 `label`), checked against the family.
    BinaryLabel,
    /// The k-th identifier column of the format, kept for reporting only.
    Identifier(usize),
    /// Read and discarded (NSL-KDD `difficulty`, CIC `Attempted Category`, duplicate columns).
    Ignored,
}

/// The 41 NSL-KDD features, in file order (label and difficulty follow).
pub const NSL_KDD_COLUMNS: [&str; 41] = [
    "duration",
    "protocol_type",
    "service",
    "flag",
    "src_bytes",
    "dst_bytes",
    "land",
    "wrong_fragment",
    "urgent",
    "hot",
    "num_failed_logins",
    "logged_in",
    "num_compromised",
    "root_shell",
    "su_attempted",
    "num_root",
    "num_file_creations",
    "num_shells",
    "num_access_files",
    "num_outbound_cmds",
    "is_host_login",
    "is_guest_login",
    "count",
    "srv_count",
    "serror_rate",
    "srv_serror_rate",
    "rerror_rate",
    "srv_rerror_rate",
    "same_srv_rate",
    "diff_srv_rate",
    "srv_diff_host_rate",
    "dst_host_count",
    "dst_host_srv_count",
    "dst_host_same_srv_rate",
    "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate",
    "dst_host_srv_diff_host_rate",
    "dst_host_serror_rate",
    "dst_host_srv_serror_rate",
    "dst_host_rerror_rate",
    "dst_host_srv_rerror_rate",
];

/// NSL-KDD categorical features.
pub const NSL_KDD_CATEGORICAL: [&str; 3] = ["protocol_type", "service", "flag"];

/// UNSW-NB15 feature columns (between `id` and `attack_cat`), in file order.
pub const UNSW_FEATURES: [&str; 42] = [
    "dur",
    "proto",
    "service",
    "state",
    "spkts",
    "dpkts",
    "sbytes",
    "dbytes",
    "rate",
    "sttl",
    "dttl",
    "sload",
    "dload",
    "sloss",
    "dloss",
    "sinpkt",
    "dinpkt",
    "sjit",
    "djit",
    "swin",
    "stcpb",
    "dtcpb",
    "dwin",
    "tcprtt",
    "synack",
    "ackdat",
    "smean",
    "dmean",
    "trans_depth",
    "response_body_len",
    "ct_srv_src",
    "ct_state_ttl",
    "ct_dst_ltm",
    "ct_src_dport_ltm",
    "ct_dst_sport_ltm",
    "ct_dst_src_ltm",
    "is_ftp_login",
    "ct_ftp_cmd",
    "ct_flw_http_mthd",
    "ct_src_ltm",
    "ct_srv_dst",
    "is_sm_ips_ports",
];

/// UNSW-NB15 categorical features.
pub const UNSW_CATEGORICAL: [&str; 3] = ["proto", "service", "state"];

/// UNSW-NB15 columns that are per-connection random values (TCP initial sequence numbers): they identify
/// a connection and describe no behaviour, so they are kept as identifiers, never features.
pub const UNSW_IDENTIFIER_LIKE: [&str; 2] = ["stcpb", "dtcpb"];

/// Identifier columns of the corrected CIC files, in file order.
pub const CIC_IDENTIFIERS: [&str; 6] =
    ["id", "Flow ID", "Src IP", "Src Port", "Dst IP", "Timestamp"];

/// Categorical CIC features: the destination port names the service, the protocol number the transport.
pub const CIC_CATEGORICAL: [&str; 2] = ["Dst Port", "Protocol"];

/// The 81 flow-feature columns of the corrected CICFlowMeter (`Flow Duration` … `Total TCP Flow Time`),
/// names and order exactly as in the corrected CIC-IDS2017 files.
pub const CIC_FLOW_FEATURES: [&str; 81] = [
    "Flow Duration",
    "Total Fwd Packet",
    "Total Bwd packets",
    "Total Length of Fwd Packet",
    "Total Length of Bwd Packet",
    "Fwd Packet Length Max",
    "Fwd Packet Length Min",
    "Fwd Packet Length Mean",
    "Fwd Packet Length Std",
    "Bwd Packet Length Max",
    "Bwd Packet Length Min",
    "Bwd Packet Length Mean",
    "Bwd Packet Length Std",
    "Flow Bytes/s",
    "Flow Packets/s",
    "Flow IAT Mean",
    "Flow IAT Std",
    "Flow IAT Max",
    "Flow IAT Min",
    "Fwd IAT Total",
    "Fwd IAT Mean",
    "Fwd IAT Std",
    "Fwd IAT Max",
    "Fwd IAT Min",
    "Bwd IAT Total",
    "Bwd IAT Mean",
    "Bwd IAT Std",
    "Bwd IAT Max",
    "Bwd IAT Min",
    "Fwd PSH Flags",
    "Bwd PSH Flags",
    "Fwd URG Flags",
    "Bwd URG Flags",
    "Fwd RST Flags",
    "Bwd RST Flags",
    "Fwd Header Length",
    "Bwd Header Length",
    "Fwd Packets/s",
    "Bwd Packets/s",
    "Packet Length Min",
    "Packet Length Max",
    "Packet Length Mean",
    "Packet Length Std",
    "Packet Length Variance",
    "FIN Flag Count",
    "SYN Flag Count",
    "RST Flag Count",
    "PSH Flag Count",
    "ACK Flag Count",
    "URG Flag Count",
    "CWR Flag Count",
    "ECE Flag Count",
    "Down/Up Ratio",
    "Average Packet Size",
    "Fwd Segment Size Avg",
    "Bwd Segment Size Avg",
    "Fwd Bytes/Bulk Avg",
    "Fwd Packet/Bulk Avg",
    "Fwd Bulk Rate Avg",
    "Bwd Bytes/Bulk Avg",
    "Bwd Packet/Bulk Avg",
    "Bwd Bulk Rate Avg",
    "Subflow Fwd Packets",
    "Subflow Fwd Bytes",
    "Subflow Bwd Packets",
    "Subflow Bwd Bytes",
    "FWD Init Win Bytes",
    "Bwd Init Win Bytes",
    "Fwd Act Data Pkts",
    "Fwd Seg Size Min",
    "Active Mean",
    "Active Std",
    "Active Max",
    "Active Min",
    "Idle Mean",
    "Idle Std",
    "Idle Max",
    "Idle Min",
    "ICMP Code",
    "ICMP Type",
    "Total TCP Flow Time",
];

/// The full 91-column header of the corrected CIC-IDS2017 files.
pub fn cic_improved_header() -> Vec<&'static str> {
    let mut h = vec![
        "id",
        "Flow ID",
        "Src IP",
        "Src Port",
        "Dst IP",
        "Dst Port",
        "Protocol",
        "Timestamp",
    ];
    h.extend(CIC_FLOW_FEATURES);
    h.extend(["Label", "Attempted Category"]);
    h
}

/// Names that the original CIC-IDS2017 (`MachineLearningCSV`, `TrafficLabelling`) and CIC-IDS2018 CSVs
/// use for a corrected-schema column, where they differ from it after [`column_key`] normalisation.
const CIC_ALIASES: &[(&str, &[&str])] = &[
    ("Flow ID", &["flowid"]),
    ("Src IP", &["sourceip", "srcip"]),
    ("Src Port", &["sourceport", "srcport"]),
    ("Dst IP", &["destinationip", "dstip"]),
    ("Dst Port", &["destinationport", "dstport"]),
    ("Total Fwd Packet", &["totalfwdpackets", "totfwdpkts"]),
    ("Total Bwd packets", &["totalbackwardpackets", "totbwdpkts"]),
    (
        "Total Length of Fwd Packet",
        &["totallengthoffwdpackets", "totlenfwdpkts"],
    ),
    (
        "Total Length of Bwd Packet",
        &["totallengthofbwdpackets", "totlenbwdpkts"],
    ),
    ("Fwd Packet Length Max", &["fwdpktlenmax"]),
    ("Fwd Packet Length Min", &["fwdpktlenmin"]),
    ("Fwd Packet Length Mean", &["fwdpktlenmean"]),
    ("Fwd Packet Length Std", &["fwdpktlenstd"]),
    ("Bwd Packet Length Max", &["bwdpktlenmax"]),
    ("Bwd Packet Length Min", &["bwdpktlenmin"]),
    ("Bwd Packet Length Mean", &["bwdpktlenmean"]),
    ("Bwd Packet Length Std", &["bwdpktlenstd"]),
    ("Flow Bytes/s", &["flowbytss"]),
    ("Flow Packets/s", &["flowpktss"]),
    ("Fwd IAT Total", &["fwdiattot"]),
    ("Bwd IAT Total", &["bwdiattot"]),
    ("Fwd Header Length", &["fwdheaderlen"]),
    ("Bwd Header Length", &["bwdheaderlen"]),
    ("Fwd Packets/s", &["fwdpktss"]),
    ("Bwd Packets/s", &["bwdpktss"]),
    ("Packet Length Min", &["minpacketlength", "pktlenmin"]),
    ("Packet Length Max", &["maxpacketlength", "pktlenmax"]),
    ("Packet Length Mean", &["pktlenmean"]),
    ("Packet Length Std", &["pktlenstd"]),
    ("Packet Length Variance", &["pktlenvar"]),
    ("FIN Flag Count", &["finflagcnt"]),
    ("SYN Flag Count", &["synflagcnt"]),
    ("RST Flag Count", &["rstflagcnt"]),
    ("PSH Flag Count", &["pshflagcnt"]),
    ("ACK Flag Count", &["ackflagcnt"]),
    ("URG Flag Count", &["urgflagcnt"]),
    (
        "CWR Flag Count",
        &["cweflagcount", "cweflagcnt", "cwrflagcnt"],
    ),
    ("ECE Flag Count", &["eceflagcnt"]),
    ("Average Packet Size", &["pktsizeavg"]),
    (
        "Fwd Segment Size Avg",
        &["avgfwdsegmentsize", "fwdsegsizeavg"],
    ),
    (
        "Bwd Segment Size Avg",
        &["avgbwdsegmentsize", "bwdsegsizeavg"],
    ),
    ("Fwd Bytes/Bulk Avg", &["fwdavgbytesbulk", "fwdbytsbavg"]),
    ("Fwd Packet/Bulk Avg", &["fwdavgpacketsbulk", "fwdpktsbavg"]),
    ("Fwd Bulk Rate Avg", &["fwdavgbulkrate", "fwdblkrateavg"]),
    ("Bwd Bytes/Bulk Avg", &["bwdavgbytesbulk", "bwdbytsbavg"]),
    ("Bwd Packet/Bulk Avg", &["bwdavgpacketsbulk", "bwdpktsbavg"]),
    ("Bwd Bulk Rate Avg", &["bwdavgbulkrate", "bwdblkrateavg"]),
    ("Subflow Fwd Packets", &["subflowfwdpkts"]),
    ("Subflow Fwd Bytes", &["subflowfwdbyts"]),
    ("Subflow Bwd Packets", &["subflowbwdpkts"]),
    ("Subflow Bwd Bytes", &["subflowbwdbyts"]),
    (
        "FWD Init Win Bytes",
        &["initwinbytesforward", "initfwdwinbyts"],
    ),
    (
        "Bwd Init Win Bytes",
        &["initwinbytesbackward", "initbwdwinbyts"],
    ),
    ("Fwd Act Data Pkts", &["actdatapktfwd"]),
    ("Fwd Seg Size Min", &["minsegsizeforward"]),
];

/// Normalises a column name for matching across CIC releases: ASCII letters and digits, lower-cased.
pub fn column_key(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The corrected-schema column that a CIC column name (of any release) stands for.
pub fn cic_canonical_name(name: &str) -> Option<&'static str> {
    let key = column_key(name);
    let canonical = cic_improved_header();
    if let Some(c) = canonical.iter().find(|c| column_key(c) == key) {
        return Some(c);
    }
    CIC_ALIASES
        .iter()
        .find(|(_, aliases)| aliases.contains(&key.as_str()))
        .map(|(c, _)| *c)
}

/// Canonical spelling of a CIC family label across releases (e.g. `Bot` and `Botnet`, the
/// `Web Attack \u{fffd} Brute Force` of the original files and `Web Attack - Brute Force`).
pub fn cic_canonical_label(raw: &str) -> String {
    let trimmed = raw.trim();
    // The original 2017 files encode the en dash of "Web Attack – XSS" as a single Latin-1 byte, which
    // reaches us as U+FFFD; normalise every dash-like separator.
    let mut s: String = trimmed
        .chars()
        .map(|c| {
            if matches!(c, '\u{fffd}' | '\u{2013}' | '\u{2014}') {
                '-'
            } else {
                c
            }
        })
        .collect();
    while s.contains("  ") {
        s = s.replace("  ", " ");
    }
    match s.as_str() {
        "Bot" => "Botnet".into(),
        "PortScan" => "Portscan".into(),
        "DoS slowloris" => "DoS Slowloris".into(),
        "Benign" | "benign" => "BENIGN".into(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_expected_sizes() {
        let nsl = DatasetKind::NslKdd.layout();
        assert_eq!((nsl.numeric.len(), nsl.categorical.len()), (38, 3));
        let unsw = DatasetKind::UnswNb15.layout();
        assert_eq!((unsw.numeric.len(), unsw.categorical.len()), (37, 3));
        assert!(!unsw.numeric.iter().any(|c| c == "stcpb" || c == "dtcpb"));
        let cic = DatasetKind::Cic.layout();
        assert_eq!((cic.numeric.len(), cic.categorical.len()), (81, 2));
        assert_eq!(cic_improved_header().len(), 91);
        let http = DatasetKind::HttpRequests.layout();
        assert_eq!(
            (http.numeric.len(), http.categorical.len()),
            (HTTP_SHAPE_FEATURES.len() + HTTP_NGRAM_BUCKETS, 0)
        );
        assert_eq!(http.numeric[7], "ngram_000");
    }

    /// A model file binds its layout's hash: adding a kind must not change another kind's (these
    /// are the hashes every stored flow model was trained under).
    #[test]
    fn the_flow_layouts_keep_their_hashes() {
        let short: Vec<String> = DatasetKind::ALL
            .iter()
            .map(|k| k.layout().hash()[..12].to_string())
            .collect();
        assert_eq!(
            short,
            [
                "efe4ae046c79",
                "5fa105eef25b",
                "0132136cadb6",
                "55c4fd66ede5"
            ]
        );
    }

    #[test]
    fn original_cic_names_map_to_corrected_names() {
        assert_eq!(cic_canonical_name(" Destination Port"), Some("Dst Port"));
        assert_eq!(
            cic_canonical_name(" Total Backward Packets"),
            Some("Total Bwd packets")
        );
        assert_eq!(
            cic_canonical_name("Init_Win_bytes_forward"),
            Some("FWD Init Win Bytes")
        );
        assert_eq!(cic_canonical_name("Tot Fwd Pkts"), Some("Total Fwd Packet"));
        assert_eq!(
            cic_canonical_name(" CWE Flag Count"),
            Some("CWR Flag Count")
        );
        assert_eq!(
            cic_canonical_name(" Fwd Header Length"),
            Some("Fwd Header Length")
        );
        assert_eq!(cic_canonical_name("Flow Byts/s"), Some("Flow Bytes/s"));
        assert_eq!(cic_canonical_name("no such column"), None);
    }

    #[test]
    fn labels_are_canonicalised() {
        assert_eq!(
            cic_canonical_label("Web Attack \u{fffd} Brute Force"),
            "Web Attack - Brute Force"
        );
        assert_eq!(cic_canonical_label(" Bot "), "Botnet");
        assert_eq!(cic_canonical_label("DDoS"), "DDoS");
    }

    #[test]
    fn formats_are_detected_from_first_line() {
        assert_eq!(
            FileFormat::detect(b"\xEF\xBB\xBFid,dur,proto,sbytes,attack_cat,label"),
            Some(FileFormat::UnswNb15)
        );
        let cic = cic_improved_header().join(",");
        assert_eq!(
            FileFormat::detect(cic.as_bytes()),
            Some(FileFormat::CicImproved)
        );
        assert_eq!(
            FileFormat::detect(b" Destination Port, Flow Duration, Total Fwd Packets, Label"),
            Some(FileFormat::CicOriginal)
        );
        let nsl = b"0,tcp,private,REJ,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,229,10,0.00,0.00,1.00,1.00,0.04,0.06,0.00,255,10,0.04,0.06,0.00,0.00,0.00,0.00,1.00,1.00,neptune,21";
        assert_eq!(FileFormat::detect(nsl), Some(FileFormat::NslKdd));
        assert_eq!(FileFormat::detect(b"a,b,c"), None);
        assert_eq!(
            FileFormat::detect(b"family,source,payload\n"),
            Some(FileFormat::HttpPayloads)
        );
        assert_eq!(FileFormat::HttpPayloads.kind(), DatasetKind::HttpRequests);
    }
}
