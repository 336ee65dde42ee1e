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
        Start with `metaids demo`: on the CIC-IDS2017 sample and the captures shipped in data/, it \
        meta-trains the threat model, benchmarks it on families it never saw, enrols two threats from 5 \
        flows each and detects them, writing EVE alerts.\n\
        Typical flow: `metaids train` (meta-train the threat model), `metaids threat add` (enrol a threat \
        from a few flows), `metaids detect` (verdicts and EVE alerts), `metaids feedback` (analyst \
        verdicts); `metaids extract` turns captures into flows, `metaids evaluate` benchmarks on unseen \
        families.",
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
    /// The whole system on the data shipped in data/: meta-train, benchmark on unseen families, enrol two
    /// threats from 5 flows of real captures, detect them, write EVE alerts and a report.
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
    /// or JSON lines with --jsonl (the same keys, plus `End Reason`; detect --flows, threat add
    /// --flows and baseline --flows read either). Prints packet, byte, flow, skip and eviction counters at the end.
    ///
    /// Example: metaids extract --pcap attack.pcapng --label "SSH-Patator" --out flows.csv
    Extract(ExtractArgs),
    /// Score flow records from Kafka as one member of a consumer group (needs `--features kafka`).
    ///
    /// Sensors publish flows with `metaids extract --kafka-brokers B --flows-topic T`; the workers of
    /// one --group share the topic's partitions. Each batch's alerts (EVE JSON, ids
    /// `<topic>-<partition>-<offset>`), verdicts and dead letters are acknowledged by the broker
    /// before its offsets are committed: at-least-once, and a redelivered flow gets the same ids.
    /// The library comes from the control topic (`metaids threat publish`), read to its end before
    /// scoring and swapped between batches when a newer version arrives.
    ///
    /// Example: metaids worker --kafka-brokers 127.0.0.1:9092 --flows-topic flows --alerts-topic alerts --model cic.model
    Worker(WorkerArgs),
    /// Check a Kafka deployment's output (needs `--features kafka`): every flow record of the flows
    /// topic has a verdict, redelivered records the same decision, and the time from publish to
    /// verdict. Prints `flows=N verdicts=N lost=N duplicates_after_dedup=N` (flows left with more
    /// than one decision after dedup by key), then dead letters, repeats, latency quantiles and the
    /// verdict rate; exits 1 when a flow was lost or decided twice differently.
    KafkaAudit(KafkaAuditArgs),
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
    /// Give every flow a verdict (benign, known threat, unknown anomaly) and write alerts as EVE JSON.
    ///
    /// Flows come from captures (--pcap, through the flow engine in memory), flow CSVs of the CIC
    /// layout (--flows) or a live interface (--interface, needs `--features live`). They are scored in
    /// micro-batches against the armed threats of --library at the model's calibrated false-positive
    /// budget. Alerts are Suricata EVE JSON lines (event_type "alert"; with --eve-flows also "flow"),
    /// deduplicated per (source address, signature, window); the file is written as ALERTS.partial,
    /// synced per batch and renamed at the end. --verdicts writes every flow's verdict before any
    /// deduplication. Responses (--respond nftables, --webhook) fire only after a batch's alerts are on
    /// disk; nftables is a dry run (a script) unless --apply-nftables.
    ///
    /// Example: metaids detect --model cic.model --library threats.json --pcap capture.pcap --alerts eve.json
    Detect(Box<DetectArgs>),
    /// Learn the site's benign traffic: the profile every threshold is calibrated on.
    ///
    /// A model is deployed on a network it was not trained on; without a baseline its thresholds
    /// come from the training data's benign rows. `baseline` embeds the site's benign flows (captures
    /// or flow files), caps each source's share (a chatty host or a scan in the window cannot
    /// dominate), learns benign prototypes from a quarter and keeps the rest as calibration rows,
    /// then refits every threat of the library jointly so that threats and the unknown rule together
    /// flag at most --budget of those rows. It is stored as a new library version (history,
    /// rollback). Baseline flows the refitted threats would flag are listed: attacks hiding in the
    /// baseline window. A budget the calibration rows cannot support (about 10 / rows) is refused
    /// with the number of flows it needs.
    ///
    /// Example: metaids baseline --model cic.model --library lib.redb --pcap monday.pcap --budget 0.01
    Baseline(BaselineArgs),
    /// Run as a service: score every new capture of a watched directory, append EVE alerts and
    /// stats records (reopened on SIGHUP), reload the threat library when it changes, and serve an
    /// HTTP API (threats, history, alerts, baseline, readiness, Prometheus metrics).
    ///
    /// Settings come from --config (TOML; see examples/metaids.toml), then the flags. SIGTERM or
    /// Ctrl-C stops it: the capture in hand is finished, the flows held decided, outputs synced.
    ///
    /// Example: metaids serve --model cic.model --library lib.redb --pcap-dir /var/spool/pcaps
    ///   --eve /var/log/metaids/eve.json --listen 127.0.0.1:9330 --tokens tokens.txt
    Serve(ServeArgs),
    /// Manage the threat library: enrol threats from a few flows (guarded), list, show, remove,
    /// export/import as JSON, history and rollback.
    ///
    /// Example: metaids threat add --library lib.redb --model cic.model --name "SSH brute force"
    ///   --flows flows.csv --label SSH-Patator --shots 5
    #[command(subcommand)]
    Threat(ThreatCommand),
    /// Turn an analyst's verdict on an alert into a new example of its threat (a new library version).
    ///
    /// `--confirm` adds the alerted flow to the threat's support; `--reject` adds it as a negative
    /// example, which raises the threat's threshold so that flow is no longer flagged. The threat is
    /// refitted and guarded like an enrolment. The flow's embedding comes from the alert itself
    /// (`metaids.embedding` in the EVE file `metaids detect` wrote).
    ///
    /// Example: metaids feedback --alerts alerts.json --alert run-12 --reject --library lib.redb --model cic.model
    Feedback(FeedbackArgs),
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
    /// The site protocol on labelled captures of a network: baseline on a seeded share of its benign
    /// flows, K flows of each attack enrolled, every other flow detected; benign flows flagged and
    /// per-attack recall at each budget.
    ///
    /// Labels come from DIR/LABELS.md (a Markdown table with `file` and `label` columns) or, without
    /// one, from each capture's file name up to its first dot; labels starting with `benign` (any
    /// case) are the site's benign traffic. Captures: *.pcap, *.pcapng, plain or .gz. The baseline is
    /// learnt exactly as `metaids baseline` learns it, the threats calibrated jointly as the library
    /// does; no baseline or support flow is scored. Mean ± 95% interval over --repeats seeds, and
    /// the Wilson interval of the benign count.
    ///
    /// Example: metaids site-eval --model cic.model --captures data/lab --shots 5 --json site.json
    SiteEval(SiteEvalArgs),
    /// Draw evaluation reports (JSON from `evaluate --json`) as one self-contained HTML file: K-shot
    /// curves with CI bands, a ROC curve per novel family, operating-point, per-family and
    /// paired-difference tables, and the protocol with its hashes.
    ///
    /// Example: metaids report --json cic.json unsw.json --out report.html
    Report(ReportArgs),
    /// Read HTTP requests from captures (TCP reassembled), web-server access logs (nginx/Apache
    /// combined or common format) or raw request files (requests one after another, as the CSIC
    /// 2010 dataset ships them) and write them as JSON lines.
    ///
    /// Prints per source the requests read and what was skipped, by reason. A bad log line or raw
    /// request is an error naming the file and line unless --skip-bad; a capture's unreadable
    /// connections are always counted, never an error (a capture holds other traffic).
    ///
    /// Example: metaids requests --pcap web.pcap --access-log access.log --out requests.jsonl
    Requests(RequestsArgs),
}

/// A response to alerts.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Respond {
    /// Add offending source addresses to nftables sets with a timeout (a script; see --apply-nftables).
    Nftables,
}

/// `detect` arguments.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(true).args(["pcap", "flows", "interface", "access_log", "request_file"])))]
pub struct DetectArgs {
    /// Model directory written by `metaids train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Armed threats: a threat library built with `metaids threat add` (its current version), or a
    /// threat document written by `metaids threat export`; either must belong to --model.
    #[arg(long)]
    pub library: PathBuf,
    /// A web-request model (trained on http-requests) beside a flow --model: the captures' flows
    /// are scored by --model and their HTTP requests (and --access-log, --request-file) by this
    /// one, into the same alert and verdict files. Each capture is then read twice.
    #[arg(long, requires = "web_library", conflicts_with = "interface")]
    pub web_model: Option<PathBuf>,
    /// The threats armed for --web-model (a library or an exported document of that model).
    #[arg(long, requires = "web_model")]
    pub web_library: Option<PathBuf>,
    /// Capture files (pcap or pcapng); each gets its own flow engine. With a web-request model
    /// (trained on http-requests), the HTTP requests reassembled from them are scored instead;
    /// with --web-model, both.
    #[arg(long, num_args = 1.., conflicts_with_all = ["flows", "interface"])]
    pub pcap: Vec<PathBuf>,
    /// Web requests from access logs and request files (a model trained on http-requests).
    #[command(flatten)]
    pub requests: RequestSourceArgs,
    /// Flow files of the CIC layout, CSV or JSON lines (e.g. written by `metaids extract`); another
    /// schema is refused.
    #[arg(long, num_args = 1.., conflicts_with = "interface")]
    pub flows: Vec<PathBuf>,
    /// Live interface (needs a build with `--features live` and root or CAP_NET_RAW); Ctrl-C stops.
    #[arg(long)]
    pub interface: Option<String>,
    /// BPF filter (tcpdump syntax) for live capture; capture files are not filtered, so it is refused
    /// without --interface.
    #[arg(long, alias = "filter", requires = "interface")]
    pub bpf: Option<String>,
    /// Stop a live capture after this many seconds.
    #[arg(long, requires = "interface")]
    pub duration: Option<f64>,
    /// Flow engine settings (captures and live interfaces).
    #[command(flatten)]
    pub flow: FlowSettingsArgs,
    /// EVE JSON lines output (written as ALERTS.partial, renamed at the end).
    #[arg(long)]
    pub alerts: PathBuf,
    /// Also write every flow's verdict as JSON lines here (flow_id, verdict, threat, distance, score, confidence).
    #[arg(long)]
    pub verdicts: Option<PathBuf>,
    /// Also write an EVE `event_type: "flow"` record per flow.
    #[arg(long)]
    pub eve_flows: bool,
    /// Flows per micro-batch.
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Deduplication window in seconds (flow time).
    #[arg(long, default_value_t = 60)]
    pub dedup_window: u64,
    /// Alerts per (source address, signature, window); 0 turns deduplication off.
    #[arg(long, default_value_t = 1)]
    pub dedup_max: u32,
    /// Drift windows in seconds of flow time: per window, the unknown share and the KS distance of
    /// the flows' benign distances from the reference's calibration rows are reported (run summary
    /// `drift_*`), with a warning past the bounds (KS 0.2, unknown share 5%, at least 200 flows).
    #[arg(long, default_value_t = 300.0)]
    pub drift_window: f64,
    /// Turn the unknown-anomaly rule off (flows are then benign or a known threat).
    #[arg(long)]
    pub no_unknown: bool,
    /// Unknown anomalies get verdicts but raise no alerts.
    #[arg(long)]
    pub no_unknown_alerts: bool,
    /// False-positive budget of the unknown-anomaly rule (default: the model's calibrated threshold).
    #[arg(long)]
    pub unknown_budget: Option<f64>,
    /// Responses to alerts.
    #[arg(long, value_enum)]
    pub respond: Vec<Respond>,
    /// nftables script path (default: ALERTS.nft).
    #[arg(long)]
    pub nft_script: Option<PathBuf>,
    /// Apply the nftables changes with `nft -f -` per batch (prints what it will do first).
    #[arg(long, requires = "respond")]
    pub apply_nftables: bool,
    /// nftables table family.
    #[arg(long, default_value = "inet")]
    pub nft_family: String,
    /// nftables table name.
    #[arg(long, default_value = "metaids")]
    pub nft_table: String,
    /// nftables IPv4 set name.
    #[arg(long, default_value = "blocklist")]
    pub nft_set: String,
    /// nftables IPv6 set name.
    #[arg(long, default_value = "blocklist6")]
    pub nft_set6: String,
    /// Seconds an address stays in the set (refreshed when it alerts again after half of it).
    #[arg(long, default_value_t = 3600)]
    pub nft_timeout: u64,
    /// A network never to block (CIDR, e.g. 10.0.0.0/24; repeatable). Loopback and the
    /// unspecified and broadcast addresses are never blocked in any case.
    #[arg(long, value_name = "CIDR")]
    pub nft_allow: Vec<ipnet::IpNet>,
    /// Give the table its own input chain that drops the sets' traffic (default: sets only).
    #[arg(long)]
    pub nft_drop_rule: bool,
    /// Also block sources of unknown anomalies (default: known threats only).
    #[arg(long)]
    pub respond_unknown: bool,
    /// POST each alert (its EVE record) to this http:// or https:// URL, with retries and backoff,
    /// on a kept-alive connection, never blocking detection.
    #[arg(long)]
    pub webhook: Option<String>,
    /// A header sent with every webhook request, `Name: value` (e.g. `Authorization: Bearer TOKEN`).
    #[arg(long, requires = "webhook")]
    pub webhook_header: Option<String>,
    /// PEM certificates the webhook trusts for https instead of Mozilla's roots (an internal CA).
    #[arg(long, requires = "webhook")]
    pub webhook_ca: Option<PathBuf>,
    /// Run id used in alert ids (default: derived from the start time).
    #[arg(long)]
    pub run_id: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `baseline` arguments.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(true).args(["pcap", "flows", "interface", "access_log", "request_file"])))]
pub struct BaselineArgs {
    /// Model directory written by `metaids train` (the library's model).
    #[arg(long)]
    pub model: PathBuf,
    /// Threat library (created for the model if it does not exist).
    #[arg(long)]
    pub library: PathBuf,
    /// Captures of the site's benign traffic (pcap/pcapng). For a model trained on
    /// http-requests, their HTTP requests are reassembled instead.
    #[arg(long, num_args = 1.., conflicts_with_all = ["flows", "interface"])]
    pub pcap: Vec<PathBuf>,
    /// The site's benign web requests (a model trained on http-requests): every query, form and
    /// body value is a baseline row, grouped by client address for the per-source cap.
    #[command(flatten)]
    pub requests: RequestSourceArgs,
    /// Flow files of the site's benign traffic, in the model's dataset format.
    #[arg(long, num_args = 1..)]
    pub flows: Vec<PathBuf>,
    /// Only flow-file rows with this label (e.g. BENIGN; default: every row).
    #[arg(long, requires = "flows")]
    pub label: Option<String>,
    /// Only capture flows this `--select` expression selects.
    #[arg(long, requires = "pcap")]
    pub select: Option<String>,
    /// Learn from a live interface instead (needs a build with `--features live` and root or
    /// CAP_NET_RAW): flows are collected until --duration, --packets or Ctrl-C, then learnt from.
    #[arg(long)]
    pub interface: Option<String>,
    /// BPF filter for the live capture, in tcpdump syntax.
    #[arg(long, alias = "filter", requires = "interface")]
    pub bpf: Option<String>,
    /// Stop the live capture after this many seconds (a learning window: e.g. 86400 for a day).
    #[arg(long, requires = "interface")]
    pub duration: Option<f64>,
    /// Stop the live capture after this many packets.
    #[arg(long, requires = "interface")]
    pub packets: Option<u64>,
    /// Flow engine settings for --pcap and --interface.
    #[command(flatten)]
    pub flow: FlowSettingsArgs,
    /// False-positive budget on the site's benign flows, threats and unknown rule together. For a
    /// web-request model it is a budget per request: the values are calibrated at the budget
    /// divided by the window's mean values per request, so that (by the union bound) at most that
    /// share of the window's requests is flagged.
    #[arg(long, default_value_t = 0.01)]
    pub budget: f64,
    /// Calibrate so that the budget holds with this confidence (e.g. 0.95) rather than on
    /// average: each half of the budget (threats, unknown rule) is calibrated at the largest rate
    /// whose exact binomial upper bound on the calibration rows is that half, which flags less and
    /// needs a longer baseline. Default: on average, each half at the split-conformal rank (at most
    /// `⌊h (n + 1)⌋ − 1` of the n calibration rows above each threshold, for half budget h), so
    /// that a benign flow the baseline never saw is flagged with probability at most the budget.
    #[arg(long)]
    pub confidence: Option<f64>,
    /// Without --confidence, calibrate each half at the calibration rows' own rate (`⌊h n⌋` rows
    /// above) instead of the split-conformal rank: the calibration before the rank, which overshoots
    /// the budget on unseen flows by about one row in n per half. To compare.
    #[arg(long, conflicts_with = "confidence")]
    pub in_sample_rank: bool,
    /// Largest share of the baseline flows one source address may contribute.
    #[arg(long, default_value_t = 0.1)]
    pub per_source_cap: f64,
    /// Share of the kept flows that give the benign prototypes and train the site forest (the rest
    /// calibrate).
    #[arg(long, default_value_t = metaids_decide::ProfileOptions::default().prototype_share)]
    pub prototype_share: f64,
    /// Unsupervised adaptation of the model to the site, fit on the kept baseline flows:
    /// `normaliser` (the numeric columns' mean and spread refit) or `none`. Detection, enrolment
    /// and feedback then preprocess with it. Default: `normaliser` for flow models (chosen on a
    /// validation site), `none` for web-request models (chosen on the validation families cmdi
    /// and lfi, where the refit cut held-out recall from 64% to 12% and from 93% to 43%).
    #[arg(long)]
    pub adapt: Option<String>,
    /// How threats are named on the site: `forest` (a random forest fitted on the baseline's
    /// prototype rows and the threats' support flows in feature space, calibrated on its
    /// calibration rows at half the budget; the profile keeps the window's feature rows) or
    /// `prototypes` (each threat's prototypes in the embedding, calibrated jointly). Default:
    /// `forest` for flow models (chosen on a validation site: README "The site forest"),
    /// `prototypes` for web-request models (the only rule they have).
    #[arg(long)]
    pub threat_rule: Option<String>,
    /// With the forest rule, leave out the source context (each flow's source's flows in the 10 s
    /// and 1 s before it and their distinct destination ports), which the forest reads by default
    /// (chosen on a validation site: README "The site forest").
    #[arg(long)]
    pub no_source_context: bool,
    /// Seed of the draws and of k-means.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Replace the library's baseline (the old one stays in the history).
    #[arg(long)]
    pub update: bool,
    /// Accept a budget the baseline cannot support, or a window the threats mostly flag.
    #[arg(long)]
    pub force: bool,
    /// Report what the baseline would do; store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Who makes the change (default: $USER).
    #[arg(long)]
    pub author: Option<String>,
}

/// `threat` subcommands.
#[derive(Debug, Subcommand)]
pub enum ThreatCommand {
    /// Enrol a threat from flows of a flow file (by label or row numbers) or of a capture.
    ///
    /// Before anything is stored the guard reports how many benign reference flows (the model's
    /// held-out calibration rows) the threat would flag when it flags every support flow, and refuses
    /// (unless --force) when that exceeds the model's false-positive budget: a mislabelled or poisoned
    /// support set must not blind or flood the detector. Creates the library if it does not exist.
    Add(Box<ThreatAddArgs>),
    /// List the threats of the current version.
    List(ThreatListArgs),
    /// Show one threat: prototypes, threshold, provenance of every support flow, the guard's report.
    Show(ThreatShowArgs),
    /// Remove a threat (a new library version; its id is never reused).
    Remove(ThreatNameArgs),
    /// Export the current version as a JSON document (tied to the library's model).
    Export(ThreatExportArgs),
    /// Import a JSON document exported for the same model (a name clash is an error unless --replace):
    /// each threat is refitted from its examples and guarded like an enrolment; creates the library
    /// for the model if it does not exist (and removes it again if the import fails).
    Import(ThreatImportArgs),
    /// List every library version: who, when, what changed.
    History(LibraryPath),
    /// Restore the threats of an earlier version (as a new version; history is kept).
    Rollback(ThreatRollbackArgs),
    /// Publish the current version to a Kafka control topic (needs `--features kafka`): every
    /// `metaids worker` reading it swaps to this version between two batches.
    Publish(ThreatPublishArgs),
}

/// `kafka-audit` arguments.
#[derive(Debug, Args)]
pub struct KafkaAuditArgs {
    /// Kafka bootstrap brokers, `host:port[,host:port…]`.
    #[arg(long)]
    pub kafka_brokers: String,
    /// The flows topic the sensors published to.
    #[arg(long)]
    pub flows_topic: String,
    /// Its dead-letter topic (default: the flows topic's name + `.dlq`).
    #[arg(long)]
    pub dead_letter_topic: Option<String>,
    /// The verdicts topic the workers wrote.
    #[arg(long)]
    pub verdicts_topic: String,
    /// Give up reading a topic after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// `threat publish` arguments.
#[derive(Debug, Args)]
pub struct ThreatPublishArgs {
    /// Library file.
    #[command(flatten)]
    pub lib: LibraryPath,
    /// Kafka bootstrap brokers, `host:port[,host:port…]`.
    #[arg(long)]
    pub kafka_brokers: String,
    /// The compacted control topic (created when missing).
    #[arg(long, default_value = "metaids.library")]
    pub control_topic: String,
    /// A librdkafka producer property, `KEY=VALUE` (repeatable).
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    pub kafka_options: Vec<String>,
}

/// The library file, for commands that only read it.
#[derive(Debug, Args)]
pub struct LibraryPath {
    /// Threat library file (redb).
    #[arg(long)]
    pub library: PathBuf,
}

/// `threat list` arguments.
#[derive(Debug, Args)]
pub struct ThreatListArgs {
    /// Library file.
    #[command(flatten)]
    pub lib: LibraryPath,
    /// Print the version and its threats as JSON (no embeddings: `threat show --json` has them).
    #[arg(long)]
    pub json: bool,
}

/// The library file and who changes it.
#[derive(Debug, Args)]
pub struct LibraryArgs {
    /// Threat library file (redb).
    #[arg(long)]
    pub library: PathBuf,
    /// Who makes the change (default: $USER).
    #[arg(long)]
    pub author: Option<String>,
}

/// `threat add` arguments.
#[derive(Debug, Args)]
pub struct ThreatAddArgs {
    /// Library file and author.
    #[command(flatten)]
    pub lib: LibraryArgs,
    /// Model directory written by `metaids train` (the library's model).
    #[arg(long)]
    pub model: PathBuf,
    /// Threat name (unique in the library).
    #[arg(long)]
    pub name: String,
    /// Flow file in the model's dataset format (e.g. CIC CSV from `metaids extract`; for a model
    /// trained on http-requests, a payload file `family,source,payload` such as data/http's).
    #[arg(
        long,
        required_unless_present_any = ["pcap", "access_log", "request_file"],
        conflicts_with_all = ["pcap", "access_log", "request_file"]
    )]
    pub flows: Option<PathBuf>,
    /// Captures (pcap/pcapng): their flows are computed in memory with the corrected CICFlowMeter
    /// features. For a model trained on http-requests, their HTTP requests are reassembled
    /// instead, as for --access-log and --request-file.
    #[arg(long, num_args = 1..)]
    pub pcap: Vec<PathBuf>,
    /// Web requests to enrol from (a model trained on http-requests): each request counts once,
    /// by its value farthest from the benign prototypes (query and form pairs, other bodies whole).
    #[command(flatten)]
    pub requests: RequestSourceArgs,
    /// Select capture flows: `host IP`, `src IP`, `dst IP`, `port N`, `sport N`, `dport N`,
    /// `proto tcp|udp|icmp|N`, joined with `and` (src/dst/sport/dport are the flow's forward
    /// direction, its first packet's sender). A flow filter, not BPF.
    #[arg(long, alias = "filter", requires = "pcap")]
    pub select: Option<String>,
    /// Flow engine settings for --pcap.
    #[command(flatten)]
    pub flow: FlowSettingsArgs,
    /// Select flow-file rows with this label.
    #[arg(long, requires = "flows")]
    pub label: Option<String>,
    /// Select flow-file rows by data-row number (1 = first row after the header): e.g. 3,7,10-12.
    #[arg(long, requires = "flows")]
    pub rows: Option<String>,
    /// Enrol this many of the selected flows, seeded-random (all if fewer).
    #[arg(long, alias = "shots", default_value_t = 5)]
    pub enrol_shots: usize,
    /// Seed of the selection.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Severity: 1 = high … 4 = low (Suricata's scale).
    #[arg(long, default_value_t = 2)]
    pub severity: u8,
    /// Category (e.g. brute-force, dos, scan).
    #[arg(long, default_value = "unclassified")]
    pub category: String,
    /// False-positive budget of the guard (default: the model's).
    #[arg(long)]
    pub budget: Option<f64>,
    /// Store the threat even if the guard refuses it.
    #[arg(long)]
    pub force: bool,
    /// Report what would be enrolled; store nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// A threat name in a library.
#[derive(Debug, Args)]
pub struct ThreatNameArgs {
    /// Library file and author.
    #[command(flatten)]
    pub lib: LibraryArgs,
    /// Threat name.
    pub name: String,
}

/// `threat show` arguments.
#[derive(Debug, Args)]
pub struct ThreatShowArgs {
    /// Library file.
    #[command(flatten)]
    pub lib: LibraryPath,
    /// Threat name.
    pub name: String,
    /// Print the threat as JSON (every value, embeddings included).
    #[arg(long)]
    pub json: bool,
}

/// `threat export` arguments.
#[derive(Debug, Args)]
pub struct ThreatExportArgs {
    /// Library file.
    #[command(flatten)]
    pub lib: LibraryPath,
    /// Output JSON file (written to a temporary name, then renamed).
    #[arg(long)]
    pub out: PathBuf,
    /// Share outside the site: keep only file names of the examples' sources and replace every IP
    /// address in their locators with `redacted` (detection is unchanged).
    #[arg(long)]
    pub redact: bool,
}

/// `threat import` arguments.
#[derive(Debug, Args)]
pub struct ThreatImportArgs {
    /// Library file and author.
    #[command(flatten)]
    pub lib: LibraryArgs,
    /// JSON document from `metaids threat export`.
    pub file: PathBuf,
    /// The model the document and the library belong to: every imported threat is refitted from its
    /// examples with it and guarded (the document's thresholds and prototypes are not trusted).
    #[arg(long)]
    pub model: PathBuf,
    /// Replace threats of the same name.
    #[arg(long)]
    pub replace: bool,
    /// False-positive budget of the guard (default: the library's).
    #[arg(long)]
    pub budget: Option<f64>,
    /// Store threats even if the guard refuses them.
    #[arg(long)]
    pub force: bool,
    /// Take the document's site profile into a library that has no baseline (a backup or a move
    /// of your own library). A profile decides what is benign, so it is never taken by default.
    #[arg(long)]
    pub adopt_profile: bool,
}

/// `threat rollback` arguments.
#[derive(Debug, Args)]
pub struct ThreatRollbackArgs {
    /// Library file and author.
    #[command(flatten)]
    pub lib: LibraryArgs,
    /// The version whose threats to restore (see `metaids threat history`).
    #[arg(value_name = "VERSION")]
    pub target: u64,
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
    /// Dataset: nsl-kdd, unsw-nb15, cic or http-requests (web-request payload families, e.g. data/http). Optional when --data lists files (detected from them).
    #[arg(long)]
    pub dataset: Option<String>,
    /// A data directory (files chosen by the split's `files` patterns) or one or more files (plain or .gz).
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// Force the file format instead of detecting it: nsl-kdd, unsw-nb15, cic-improved, cic-original, http-payloads.
    #[arg(long)]
    pub format: Option<String>,
    /// Malformed rows: stop with an error, or skip and count them.
    #[arg(long, value_enum, default_value_t = OnBadRow::Error)]
    pub on_bad_row: OnBadRow,
    /// Split file (default: the one in splits/ for the dataset, built into the binary).
    #[arg(long, conflicts_with = "fold")]
    pub split: Option<PathBuf>,
    /// A built-in leave-families-out fold of the dataset: 0 (the default split), 1 or 2
    /// (`splits/<dataset>-fold<N>.toml`).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub fold: Option<u8>,
}

/// `requests` arguments.
#[derive(Debug, Args)]
pub struct RequestsArgs {
    /// Capture files (pcap or pcapng, plain or `.gz`): the client side of each TCP connection is
    /// reassembled and its HTTP/1.x requests parsed.
    #[arg(long, num_args = 1..)]
    pub pcap: Vec<PathBuf>,
    /// Access logs and request files.
    #[command(flatten)]
    pub input: RequestSourceArgs,
    /// JSON lines output, one request a line (written to a temporary name, then renamed). Without
    /// it only the counts are printed.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Web-request inputs besides captures (`requests`, and `detect` and `threat add` with a model
/// trained on `http-requests`).
#[derive(Debug, Clone, Args)]
pub struct RequestSourceArgs {
    /// Access logs (plain or `.gz`) in the combined or common format.
    #[arg(long, num_args = 1..)]
    pub access_log: Vec<PathBuf>,
    /// Raw request files (plain or `.gz`): requests one after another, blank lines between.
    #[arg(long, alias = "requests", num_args = 1..)]
    pub request_file: Vec<PathBuf>,
    /// Count and skip a bad log line or raw request instead of stopping at it.
    #[arg(long)]
    pub skip_bad: bool,
    /// Body bytes kept per request (the rest is framed and dropped).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body: usize,
}

/// `report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Reports written by `metaids evaluate --json` (one section each, in this order).
    #[arg(long, num_args = 1.., required = true)]
    pub json: Vec<PathBuf>,
    /// The HTML file to write (written to a temporary name, then renamed).
    #[arg(long)]
    pub out: PathBuf,
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
    /// A model written by `metaids train`: its rows (protonet, protonet+known, protonet+unknown, protonet+finetune) are added beside the
    /// baselines. Refused if it was trained on another dataset or feature schema, and (unless
    /// --force) on another split file or other data files (compared by sha256).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Evaluate a model trained on another split or other data anyway (each difference is printed).
    #[arg(long)]
    pub force: bool,
    /// Train one model per seed on the split (default training settings, as `metaids train --seed S`)
    /// and pool the model rows over seeds × episodes, so their CIs include the training-seed
    /// variance, e.g. `--train-seeds 1,2,3`. Instead of --model.
    #[arg(long, value_delimiter = ',', conflicts_with = "model")]
    pub train_seeds: Vec<u64>,
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
    #[arg(long = "budget", alias = "fpr-budget")]
    pub fpr_budget: Option<f64>,
    /// Weight of the supervised auxiliary loss (linear head over benign and every seen family; 0: none).
    #[arg(long)]
    pub aux_weight: Option<f64>,
    /// Keep no enrolment fine-tuning material (no protonet+finetune row, no MAML phase).
    #[arg(long)]
    pub no_finetune: bool,
    /// SGD steps of enrolment fine-tuning (and of the MAML inner loop).
    #[arg(long)]
    pub finetune_steps: Option<usize>,
    /// SGD learning rate of enrolment fine-tuning.
    #[arg(long)]
    pub finetune_lr: Option<f64>,
    /// First-order MAML outer steps that meta-train the fine-tuning initialisation (0: none).
    #[arg(long)]
    pub maml_steps: Option<usize>,
    /// Adam learning rate of the MAML outer loop.
    #[arg(long)]
    pub maml_lr: Option<f64>,
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
    /// False-positive budget of the budget-matched forests (forest@budget, forest+shots@budget): their
    /// attack-probability threshold flags at most this fraction of held-out benign training rows.
    #[arg(long = "budget", alias = "fpr-budget", default_value_t = 0.01)]
    pub fpr_budget: f64,
    /// Most benign query-pool rows every task also scores for the operating points (a seeded
    /// sample when the pool is larger).
    #[arg(long, default_value_t = 2000)]
    pub pool_max: usize,
    /// Keep query rows that repeat a training row or one of the task's support rows exactly (by
    /// default they are removed and counted in the report: a repeated row measures memory).
    #[arg(long)]
    pub keep_twins: bool,
    /// Methods to run, comma-separated (default: all baselines, plus the model's rows with --model):
    /// nearest-centroid, knn, knn+shots, forest, forest+shots, forest@budget, forest+shots@budget,
    /// protonet, protonet+known, protonet+unknown, protonet+finetune, protonet-zero-shot.
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Write the full report (protocol, per-method, per-family) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write every task's metrics (method, K, family, episode, then F1, recall, FPR, precision and
    /// the operating points) as CSV here.
    #[arg(long)]
    pub episodes_csv: Option<PathBuf>,
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
    /// Directory holding the vendored CIC-IDS2017 sample.
    #[arg(long, default_value = "data/cic-ids2017")]
    pub data: PathBuf,
    /// Captures whose attack the demo enrols from a few flows and then detects.
    #[arg(long, num_args = 1.., default_values = ["data/pcaps/sshguess.pcap", "data/pcaps/ftp-bruteforce.pcap"])]
    pub captures: Vec<PathBuf>,
    /// Labelled captures of a network the model never saw, for the site-adaptation step (skipped
    /// when the directory is absent).
    #[arg(long, default_value = "data/lab")]
    pub lab: PathBuf,
    /// The web-request payload families shipped in the repository (the web part).
    #[arg(long, default_value = "data/http")]
    pub http_data: PathBuf,
    /// Flows of each capture used to enrol its threat.
    #[arg(long, default_value_t = 5)]
    pub enrol_shots: usize,
    /// Output folder (model, threat library, alerts, verdicts, nftables script, report); replaced files
    /// of an earlier demo run are overwritten.
    #[arg(long, default_value = "metaids-demo")]
    pub out: PathBuf,
    /// Protocol settings of the benchmark step.
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
    /// BPF filter for live capture, in tcpdump syntax (e.g. "tcp or udp"); capture files are not
    /// filtered, so it is refused without --interface.
    #[arg(long, alias = "filter", requires = "interface")]
    pub bpf: Option<String>,
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
    #[arg(long, required_unless_present = "kafka_brokers")]
    pub out: Option<PathBuf>,
    /// Value of the Label column (default `unlabelled`).
    #[arg(long)]
    pub label: Option<String>,
    /// Write JSON lines instead of CSV (readable wherever a flow CSV is).
    #[arg(long)]
    pub jsonl: bool,
    /// Publish the flows to Kafka (needs a build with `--features kafka`): each flow record in
    /// the binary wire format (crates/flow/src/wire.rs), keyed by its source address (or its
    /// conversation, --kafka-key). With --out too, both are written.
    #[command(flatten)]
    pub kafka: KafkaPublishArgs,
    /// Flow engine settings.
    #[command(flatten)]
    pub flow: FlowSettingsArgs,
}

/// Where a sensor publishes flow records.
#[derive(Debug, Args)]
pub struct KafkaPublishArgs {
    /// Kafka bootstrap brokers, `host:port[,host:port…]`.
    #[arg(long, requires = "flows_topic")]
    pub kafka_brokers: Option<String>,
    /// Topic the flow records go to (created with --kafka-partitions when missing).
    #[arg(long, requires = "kafka_brokers")]
    pub flows_topic: Option<String>,
    /// Partitions of the flows topic when this command creates it: the most workers that can share it.
    #[arg(long, default_value_t = 12, requires = "kafka_brokers")]
    pub kafka_partitions: i32,
    /// What a flow's message key is made of: `source` (its source address: every flow of a source
    /// lands in one partition, so the worker that owns it counts the source context the site
    /// forest reads over all of them, as `detect` does) or `conversation` (both endpoints and the
    /// protocol: spread more evenly, but a worker then counts a source's context over its own
    /// partitions only, lower than the baseline's counts).
    #[arg(long, default_value = "source", requires = "kafka_brokers")]
    pub kafka_key: String,
    /// Publish at most this many flows a second (a replay at a fixed rate; default: as fast as
    /// the captures are read).
    #[arg(long, requires = "kafka_brokers")]
    pub kafka_rate: Option<f64>,
    /// A librdkafka producer property, `KEY=VALUE` (repeatable), over the defaults: compression.type=lz4,
    /// linger.ms=20, batch.num.messages=10000, queue.buffering.max.kbytes=65536, acks=all.
    #[arg(
        long = "kafka-option",
        value_name = "KEY=VALUE",
        requires = "kafka_brokers"
    )]
    pub kafka_options: Vec<String>,
}

/// `worker` arguments.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Kafka bootstrap brokers, `host:port[,host:port…]`.
    #[arg(long)]
    pub kafka_brokers: String,
    /// Consumer group: the workers of one group share the flows topic's partitions.
    #[arg(long, default_value = "metaids")]
    pub group: String,
    /// Topic the sensors publish flow records to.
    #[arg(long)]
    pub flows_topic: String,
    /// Topic EVE alerts go to, keyed by alert id (`<flows topic>-<partition>-<offset>`).
    #[arg(long)]
    pub alerts_topic: String,
    /// Topic every flow's verdict goes to, keyed by the flow's `<topic>-<partition>:<offset>`.
    #[arg(long)]
    pub verdicts_topic: Option<String>,
    /// Topic undecodable records go to, with the reason in the `metaids-reason` header (default:
    /// the flows topic's name + `.dlq`).
    #[arg(long)]
    pub dead_letter_topic: Option<String>,
    /// Compacted topic the threat library is published on (`metaids threat publish`).
    #[arg(long, default_value = "metaids.library")]
    pub control_topic: String,
    /// Model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Threat library or exported document, used only while the control topic holds no library.
    #[arg(long)]
    pub library: Option<PathBuf>,
    /// Flows decided per batch; offsets are committed once a batch's outputs are acknowledged.
    #[arg(long, default_value_t = 1024)]
    pub batch_size: usize,
    /// Longest a partial batch waits for more flows, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub batch_wait_ms: u64,
    /// Stop after this many seconds without a flow record (default: run until Ctrl-C or SIGTERM).
    #[arg(long)]
    pub idle_exit: Option<f64>,
    /// Serve Prometheus metrics on this address (`GET /metrics`: flows, alerts, dead letters,
    /// batches, commit failures, library version, partitions).
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
    /// EVE `host` of the alerts (default: the machine's host name).
    #[arg(long)]
    pub sensor: Option<String>,
    /// Do not raise alerts for unknown anomalies (they still get verdicts).
    #[arg(long)]
    pub no_unknown_alerts: bool,
    /// A librdkafka property, `KEY=VALUE` (repeatable), for the consumer and producers.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    pub kafka_options: Vec<String>,
}

/// Flow engine settings, the same in every command that builds flows from packets.
#[derive(Debug, Args)]
pub struct FlowSettingsArgs {
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

/// `feedback` arguments.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("judgement").required(true).args(["confirm", "reject"])))]
pub struct FeedbackArgs {
    /// The EVE alerts file written by `metaids detect --alerts`.
    #[arg(long)]
    pub alerts: PathBuf,
    /// The alert's id (`metaids.alert_id`, e.g. `run-12`).
    #[arg(long)]
    pub alert: String,
    /// The alert was right: the flow becomes a support example of the threat.
    #[arg(long)]
    pub confirm: bool,
    /// The alert was wrong: the flow becomes a negative example (no longer flagged).
    #[arg(long)]
    pub reject: bool,
    /// The threat the flow belongs to (default: the alert's threat; required for unknown anomalies).
    #[arg(long)]
    pub threat: Option<String>,
    /// Threat library file (redb).
    #[arg(long)]
    pub library: PathBuf,
    /// The model the library and the alerts belong to.
    #[arg(long)]
    pub model: PathBuf,
    /// Who gives the feedback (default: $USER).
    #[arg(long)]
    pub author: Option<String>,
    /// Store the refit even if the enrolment guard refuses it, or confirm a flow that is nearer
    /// benign traffic or another threat than the named one.
    #[arg(long)]
    pub force: bool,
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
    #[arg(long, alias = "shots", default_value_t = 5)]
    pub enrol_shots: usize,
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

/// `metaids site-eval`.
#[derive(Debug, Args)]
pub struct SiteEvalArgs {
    /// Model directory written by `metaids train` (a CIC-format model: flows come from captures).
    #[arg(long)]
    pub model: PathBuf,
    /// Directory of labelled captures (LABELS.md, or labels from file names).
    #[arg(long)]
    pub captures: PathBuf,
    /// Flows enrolled per attack.
    #[arg(long, default_value_t = 5)]
    pub shots: usize,
    /// Seeded repeats (mean ± 95% interval over them).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// False-positive budgets to report, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.01,0.001")]
    pub budgets: Vec<f64>,
    /// Seed of every draw.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Share of the benign flows in the baseline window (the rest are scored).
    #[arg(long, default_value_t = 0.5)]
    pub baseline_share: f64,
    /// Most flows in the baseline window.
    #[arg(long, default_value_t = 2000)]
    pub baseline_max: usize,
    /// Largest share of the baseline flows one source address may contribute (as `baseline`).
    #[arg(long, default_value_t = 0.1)]
    pub per_source_cap: f64,
    /// Calibrate so that each budget holds with this confidence (as `baseline --confidence`).
    #[arg(long)]
    pub confidence: Option<f64>,
    /// Calibrate each half at the calibration rows' own rate instead of the split-conformal rank
    /// (as `baseline --in-sample-rank`).
    #[arg(long, conflicts_with = "confidence")]
    pub in_sample_rank: bool,
    /// Fit the site forest on the enrolled flows as they are, without the timing jitter `baseline`
    /// arms it with (each enrolled flow also learnt with its durations, inter-arrival times and
    /// rates stretched and shrunk by a factor of 4). To compare.
    #[arg(long)]
    pub no_timing_jitter: bool,
    /// Also write every scored flow's verdict (and each repeat's enrolled flows) as CSV: rule,
    /// budget, repeat, role, flow, label, verdict, the family named, whether it is correct, and the
    /// flow's capture, position in it, addresses, ports and start — to see which flows a rule
    /// misses. Memory grows with flows × repeats × budgets × rules.
    #[arg(long)]
    pub verdicts_csv: Option<PathBuf>,
    /// Share of the kept baseline flows that give the benign prototypes and train the site forest
    /// (the rest calibrate), as `baseline --prototype-share`.
    #[arg(long, default_value_t = metaids_decide::ProfileOptions::default().prototype_share)]
    pub prototype_share: f64,
    /// Calibrate budgets the baseline cannot support instead of reporting them refused.
    #[arg(long)]
    pub force: bool,
    /// Also decide every draw with threats named by a forest learnt on the site (a histogram
    /// random forest on the baseline's prototype rows and the enrolled flows, in feature space,
    /// calibrated on the baseline's calibration rows at half the budget; the embedding's unknown
    /// rule keeps the other half): a separate row of the report.
    #[arg(long)]
    pub site_forest: bool,
    /// The site forest also reads each flow's source context (its source's flows in the 10 s and
    /// 1 s before it, and their distinct destination ports, within its capture), as `metaids
    /// baseline` arms it by default. Implies --site-forest.
    #[arg(long)]
    pub site_context: bool,
    /// Also report an unsupervised adaptation of the model to the site, fit on the baseline
    /// window only: `normaliser` (the numeric columns' mean and spread refit: `baseline`'s
    /// default), `layernorm` (the LayerNorms' gains and shifts adapted to the window), `both`, or
    /// `none`.
    #[arg(long, default_value = "normaliser")]
    pub adapt: String,
    /// Largest factor the LayerNorm adaptation may scale one channel by (≥ 1).
    #[arg(long, default_value_t = 4.0)]
    pub ln_max_ratio: f32,
    /// Flow engine settings.
    #[command(flatten)]
    pub flow: FlowSettingsArgs,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `metaids serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML config file (every key optional; the flags below override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model directory written by `metaids train --dataset cic`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The threat library (reloaded whenever it changes).
    #[arg(long)]
    pub library: Option<PathBuf>,
    /// A directory of captures (pcap, pcapng, .gz): each new file is scored once.
    #[arg(long)]
    pub pcap_dir: Option<PathBuf>,
    /// A network interface to capture from (a build with `--features live`; needs CAP_NET_RAW).
    #[arg(long)]
    pub interface: Option<String>,
    /// A BPF filter (tcpdump syntax) for --interface.
    #[arg(long, requires = "interface")]
    pub bpf: Option<String>,
    /// A directory of flow files (CSV of the model's dataset, `.csv` or `.csv.gz`): each new
    /// file is scored once.
    #[arg(long)]
    pub flow_dir: Option<PathBuf>,
    /// The EVE JSON file alerts and stats records are appended to (reopened on SIGHUP).
    #[arg(long)]
    pub eve: Option<PathBuf>,
    /// Where progress over --pcap-dir is kept (default: EVE.state.json).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// The API's address (default 127.0.0.1:9330; port 0 picks a free port, printed at start).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Bearer tokens, lines `name role token` (role read or write). Without it the API is
    /// read-only and must listen on a loopback address.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// The API's TLS certificate chain (PEM); with --tls-key the API speaks HTTPS only.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The sensor's name in EVE records (default: the host name).
    #[arg(long)]
    pub sensor: Option<String>,
    /// Seconds between EVE stats records (0: none; default 60).
    #[arg(long)]
    pub stats_interval: Option<u64>,
    /// Milliseconds between scans of --pcap-dir (default 1000).
    #[arg(long)]
    pub poll_ms: Option<u64>,
    /// A capture is scored once unchanged for this many milliseconds (default 2000).
    #[arg(long)]
    pub settle_ms: Option<u64>,
    /// Flows per micro-batch (default 1024).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Stop by itself after this many seconds (default: run until SIGTERM or Ctrl-C).
    #[arg(long)]
    pub max_runtime: Option<u64>,
    /// POST every alert to this http:// or https:// URL (config key `webhook`).
    #[arg(long)]
    pub webhook: Option<String>,
    /// Also send every alert to TARGET: syslog:udp://HOST:PORT, syslog:unix:/dev/log (RFC 5424),
    /// unix-stream:PATH or unix-dgram:PATH (JSON lines); repeatable (config key `forward`).
    #[arg(long, value_name = "TARGET")]
    pub forward: Vec<String>,
}
