//! Command-line arguments as typed (clap), before validation; `checked` turns them into settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// metaids: detect new network attack families from a handful of labelled flows.
///
/// Start with `metaids demo`. Benchmarks: `metaids evaluate --dataset nsl-kdd --data DIR`.
#[derive(Debug, Parser)]
#[command(
    name = "metaids",
    version,
    about = "metaids: detect new network attack families from a handful of labelled flows",
    long_about = "metaids: detect new network attack families from a handful of labelled flows.\n\n\
        Start with `metaids demo` (the unseen-family benchmark on the NSL-KDD copy in data/).\n\
        Typical flow: `metaids extract` (captures → flows), `metaids evaluate` (benchmarks on families never \
        seen in training), `metaids train` (meta-train the threat model).",
    propagate_version = true
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
    /// Log level (error, warn, info, debug, trace); also METAIDS_LOG.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the unseen-family benchmark on the NSL-KDD copy shipped in data/ and print the table.
    Demo(DemoArgs),
    /// Few-shot benchmark on attack families never seen in training, with classical baselines.
    ///
    /// For every novel family of the split with at least K + 10 rows and each K: EPISODES tasks with K
    /// support rows of the family and up to 50 other rows of it plus as many benign query-pool rows as
    /// queries. Reports recall, FPR, precision and F1 macro-averaged over families, mean ± 95% CI over
    /// episodes, per-family rows, and N-way accuracy among novel families.
    ///
    /// Example: metaids evaluate --dataset cic --data ../shared/data/cic-ids2017-improved --json cic.json
    Evaluate(EvaluateArgs),
    /// Read dataset files and print row counts per family, skipped rows and missing features.
    Stats(DataArgs),
    /// Turn pcap/pcapng captures into bidirectional flows with the corrected CICFlowMeter features.
    ///
    /// Writes the same 91-column header as the corrected CIC-IDS2017 CSVs (identifiers filled, Label =
    /// `unlabelled` or --label, Attempted Category = -1), so `metaids evaluate`/`stats` read it unchanged;
    /// or JSON lines with --jsonl. Prints packet, byte, flow, skip and eviction counters at the end.
    ///
    /// Example: metaids extract --pcap attack.pcapng --label "SSH-Patator" --out flows.csv
    Extract(ExtractArgs),
    /// Measure reading and preprocessing throughput (rows/s per core) on dataset files.
    Bench(BenchArgs),
    /// Meta-train the universal threat model on seen families and write it to a model directory.
    ///
    /// Prototypical-network episodes over the split's seen families (benign always one of the ways);
    /// the kept weights are those with the best K=5 detection F1 on the validation families (never the
    /// novel ones); benign prototypes come from k-means and thresholds are calibrated on held-out benign
    /// training rows at the false-positive budget.
    ///
    /// Example: metaids train --dataset cic --data ../shared/data/cic-ids2017-improved --out cic.model
    Train(TrainArgs),
    /// Few-shot detection of the attack families of new data (cross-dataset transfer) with a trained model.
    ///
    /// Every non-benign label in the files is treated as a novel family: for each K, EPISODES tasks with
    /// K support rows of the family and up to 50 other rows of it plus as many benign rows of the same
    /// files. With --benign-calibration N, N seeded benign rows of the files (never queried) give the
    /// model new benign prototypes (k-means) and calibration rows, and the thresholds are recomputed;
    /// without it, the model's own benign reference is used. Same report (and JSON) as `evaluate`.
    ///
    /// Example: metaids fewshot --model cic.model --flows new-site/*.csv --shots 1,5,10 --json new.json
    Fewshot(FewshotArgs),
    /// NSL-KDD standard split: train on KDDTrain+, test on KDDTest+ (binary), with no shots and with
    /// 5 flows of each test-only family enrolled.
    ///
    /// The model is meta-trained on KDDTrain+ only (validation families held out from KDDTrain+ choose
    /// the kept weights); no KDDTest+ row is used for training, calibration or any choice. Zero-shot:
    /// benign vs known-family prototypes plus the unknown-anomaly rule at the false-positive budget.
    /// Enrolled: plus one prototype per test-only family from SHOTS seeded rows of it (excluded from
    /// scoring), repeated over --repeats seeds (mean ± 95% CI). The forest baseline is run under the
    /// same protocol.
    ///
    /// Example: metaids standard --data ../shared/data/nsl-kdd --json standard.json
    Standard(StandardArgs),
}

/// What to do with a malformed row.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OnBadRow {
    /// Stop with an error naming the file, line and column.
    Error,
    /// Skip the row, count it and show the first few.
    Skip,
}

/// Where data comes from.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Dataset: nsl-kdd, unsw-nb15 or cic. Optional when --data lists files (detected from them).
    #[arg(long)]
    pub dataset: Option<String>,
    /// A data directory (files chosen by the split's `files` patterns) or one or more files (plain or .gz).
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// Force the file format instead of detecting it: nsl-kdd, unsw-nb15, cic-improved, cic-original.
    #[arg(long)]
    pub format: Option<String>,
    /// Malformed rows: stop with an error, or skip and count them.
    #[arg(long, value_enum, default_value_t = OnBadRow::Error)]
    pub on_bad_row: OnBadRow,
    /// Split file (default: the one in splits/ for the dataset, built into the binary).
    #[arg(long)]
    pub split: Option<PathBuf>,
}

/// `evaluate` arguments.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Data selection.
    #[command(flatten)]
    pub data: DataArgs,
    /// Protocol settings.
    #[command(flatten)]
    pub protocol: ProtocolArgs,
    /// A model written by `metaids train`: its rows (protonet, protonet+known, protonet+unknown) are added beside the
    /// baselines. Refused if it was trained on another dataset or feature schema.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// `train` arguments.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Data selection.
    #[command(flatten)]
    pub data: DataArgs,
    /// Output model directory (written to a temporary name, then renamed).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of initialisation, episodes, the benign hold-out and k-means.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Most optimiser steps (one episode each); early stopping may end sooner.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Embedding size.
    #[arg(long)]
    pub embedding: Option<usize>,
    /// Hidden width.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Hidden blocks after the input layer.
    #[arg(long)]
    pub depth: Option<usize>,
    /// Plain MLP blocks instead of residual ones.
    #[arg(long)]
    pub no_residual: bool,
    /// No LayerNorm.
    #[arg(long)]
    pub no_layer_norm: bool,
    /// Ways per training episode, benign included.
    #[arg(long)]
    pub ways: Option<usize>,
    /// K values of training episodes, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub shots: Vec<usize>,
    /// Query rows per way in training episodes.
    #[arg(long)]
    pub queries: Option<usize>,
    /// AdamW learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Validate every this many steps.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Stop after this many validations without improvement (0: never).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Number of benign prototypes (k of k-means).
    #[arg(long)]
    pub benign_prototypes: Option<usize>,
    /// False-positive budget of the calibrated thresholds.
    #[arg(long)]
    pub fpr_budget: Option<f64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Protocol settings shared by `evaluate` and `demo`.
#[derive(Debug, Args)]
pub struct ProtocolArgs {
    /// K values (shots), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10")]
    pub shots: Vec<usize>,
    /// Episodes per family and K (at least 100 for reported figures).
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    /// Seed of the episodes and baselines.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// N of the N-way accuracy episodes.
    #[arg(long, default_value_t = 5)]
    pub ways: usize,
    /// Methods to run, comma-separated (default: all baselines, plus the model's rows with --model):
    /// nearest-centroid, knn, knn+shots, forest, forest+shots, protonet, protonet+known, protonet+unknown.
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Write the full report (protocol, per-method, per-family) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also print the per-family table of this method at K = 5.
    #[arg(long)]
    pub per_family: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory holding the vendored NSL-KDD files.
    #[arg(long, default_value = "data/nsl-kdd")]
    pub data: PathBuf,
    /// Protocol settings.
    #[command(flatten)]
    pub protocol: ProtocolArgs,
}

/// `bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Data selection.
    #[command(flatten)]
    pub data: DataArgs,
    /// Read the files this many times and report the best pass.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
}

/// `extract` arguments.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Capture files (pcap or pcapng, detected from the magic number).
    #[arg(long, num_args = 1.., required_unless_present = "interface", conflicts_with = "interface")]
    pub pcap: Vec<PathBuf>,
    /// Capture live from this interface instead (needs a build with `--features live` and root or
    /// CAP_NET_RAW). Stops on Ctrl-C, --duration or --packets; live flows are then flushed.
    #[arg(long)]
    pub interface: Option<String>,
    /// BPF filter for live capture, in tcpdump syntax (e.g. "tcp or udp").
    #[arg(long, requires = "interface")]
    pub filter: Option<String>,
    /// Stop a live capture after this many seconds.
    #[arg(long, requires = "interface")]
    pub duration: Option<f64>,
    /// Stop a live capture after this many packets.
    #[arg(long, requires = "interface")]
    pub packets: Option<u64>,
    /// Do not put the interface in promiscuous mode.
    #[arg(long, requires = "interface")]
    pub no_promiscuous: bool,
    /// Output file (written to a temporary name, then renamed).
    #[arg(long)]
    pub out: PathBuf,
    /// Value of the Label column (default `unlabelled`).
    #[arg(long)]
    pub label: Option<String>,
    /// Write JSON lines instead of CSV.
    #[arg(long)]
    pub jsonl: bool,
    /// Active timeout in seconds: a flow is cut this long after its first packet (CICFlowMeter: 120).
    #[arg(long, default_value_t = 120.0)]
    pub flow_timeout: f64,
    /// Activity timeout in seconds separating active and idle periods (CICFlowMeter: 5).
    #[arg(long, default_value_t = 5.0)]
    pub activity_timeout: f64,
    /// A flow silent this many seconds is ended (default: the flow timeout).
    #[arg(long)]
    pub idle_timeout: Option<f64>,
    /// Most live flows; beyond, the least recently seen is ended early and counted as an eviction.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_flows: usize,
}

/// `fewshot` arguments.
#[derive(Debug, Args)]
pub struct FewshotArgs {
    /// A model written by `metaids train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Flow files of the new network (CSV as written by `metaids extract` or a dataset reader's format),
    /// with the model's feature schema. Files the model was trained on are refused.
    #[arg(long, num_args = 1.., required = true)]
    pub flows: Vec<PathBuf>,
    /// Force the file format instead of detecting it: nsl-kdd, unsw-nb15, cic-improved, cic-original.
    #[arg(long)]
    pub format: Option<String>,
    /// Malformed rows: stop with an error, or skip and count them.
    #[arg(long, value_enum, default_value_t = OnBadRow::Error)]
    pub on_bad_row: OnBadRow,
    /// The benign label of the files (default: the benign label of the model's dataset split).
    #[arg(long)]
    pub benign: Option<String>,
    /// Recalibrate the benign reference on this many seeded benign rows of the files (kept apart from
    /// the queries): new k-means benign prototypes from half, calibration from the other half.
    #[arg(long)]
    pub benign_calibration: Option<usize>,
    /// K values (shots), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10")]
    pub shots: Vec<usize>,
    /// Episodes per family and K (at least 100 for reported figures).
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    /// Seed of the episodes and of the benign calibration rows.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// N of the N-way accuracy episodes.
    #[arg(long, default_value_t = 5)]
    pub ways: usize,
    /// Model rows to run, comma-separated: protonet, protonet+known, protonet+unknown,
    /// nearest-centroid (default: the three model rows).
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Write the report (the `evaluate` fields plus a `fewshot` object) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also print the per-family table of this method at K = 5.
    #[arg(long)]
    pub per_family: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `standard` arguments.
#[derive(Debug, Args)]
pub struct StandardArgs {
    /// Directory holding KDDTrain+.txt and KDDTest+.txt (plain or .gz).
    #[arg(long)]
    pub data: PathBuf,
    /// Use this model (trained by `metaids standard --save-model` on KDDTrain+ only) instead of
    /// training one.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Write the model trained here to this directory.
    #[arg(long, conflicts_with = "model")]
    pub save_model: Option<PathBuf>,
    /// Flows enrolled per test-only family.
    #[arg(long, default_value_t = 5)]
    pub shots: usize,
    /// Seeds of the enrolled setting (mean ± 95% CI over them).
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Seed of training and of the enrolment draws.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Most optimiser steps when training.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Skip the forest baseline.
    #[arg(long)]
    pub no_forest: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}
