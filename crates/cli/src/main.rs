//! The `metaids` command line: parses arguments, checks them, and drives the library crates.
//!
//! No detection or evaluation logic lives here: it loads data through `metaids-ingest`, benchmarks
//! through `metaids-eval`, and prints or writes what they return.

mod args;
mod baseline_cmd;
mod candidates;
mod demo;
mod demo_web;
mod detect_cmd;
mod extract;
mod feedback_cmd;
mod fewshot;
mod kafka_cmd;
mod model_cmd;
mod progress;
mod requests_cmd;
mod serve_cmd;
mod site_eval;
mod standard;
mod threat_cmd;
mod web;

use threat_cmd::who;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use metaids_core::preprocess::{Normaliser, PreprocessConfig};
use metaids_core::schema::{DatasetKind, FileFormat};
use metaids_core::split::SplitSpec;
use metaids_core::FlowFrame;
use metaids_eval::{BaselineConfig, Benchmark, DataFile, EvalConfig, FewShotMethod, Report};
use metaids_ingest::{read_files, resolve_files, write_atomic, BadRowPolicy, ReadOptions, SkipLog};

use args::{BenchArgs, Cli, Command, DataArgs, EvaluateArgs, OnBadRow, ProtocolArgs, ReportArgs};

fn main() {
    // A damaged threat library makes the storage engine panic on its check thread; the library turns
    // that into an error naming the file, so the panic message itself is noise.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some(metaids_library::CHECK_THREAD) {
            default_hook(info);
        }
    }));
    let cli = Cli::parse();
    let filter = std::env::var("METAIDS_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Baseline(a) => baseline_cmd::run(a),
        Command::Serve(a) => serve_cmd::run(a),
        Command::Evaluate(a) => evaluate(a),
        Command::Stats(a) => stats(a),
        Command::Bench(a) => bench(a),
        Command::Extract(a) => extract::run(a),
        Command::Worker(a) => kafka_cmd::worker(a),
        Command::KafkaAudit(a) => kafka_cmd::audit(a),
        Command::Train(a) => model_cmd::train(a),
        Command::Detect(a) => detect_cmd::run(*a),
        Command::Threat(c) => threat_cmd::run(c),
        Command::Feedback(a) => feedback_cmd::run(a),
        Command::Fewshot(a) => fewshot::run(a),
        Command::Standard(a) => standard::run(a),
        Command::SiteEval(a) => site_eval::run(a),
        Command::Report(a) => report(a),
        Command::Requests(a) => requests_cmd::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The benchmark rows the demo shows unless --methods says otherwise: the model's, and the baselines
/// that matter most (the strongest, with shots, by majority vote and at the model's false-positive budget).
pub const DEMO_METHODS: &[&str] = &[
    "nearest-centroid",
    "forest",
    "forest+shots",
    "forest+shots@budget",
    "protonet-zero-shot",
    "protonet",
    "protonet+known",
];

/// The split files of the repository, built in so the binary works from any directory: fold 0 (the
/// default split) and two more leave-families-out folds per flow dataset; `None` for a fold the
/// repository does not have.
fn builtin_split(kind: DatasetKind, fold: u8) -> Option<(&'static str, &'static str)> {
    macro_rules! split {
        ($name:literal) => {
            Some((
                concat!("splits/", $name),
                include_str!(concat!("../../../splits/", $name)),
            ))
        };
    }
    match (kind, fold) {
        (DatasetKind::NslKdd, 1) => split!("nsl-kdd-fold1.toml"),
        (DatasetKind::NslKdd, 2) => split!("nsl-kdd-fold2.toml"),
        (DatasetKind::NslKdd, _) => split!("nsl-kdd.toml"),
        (DatasetKind::UnswNb15, 1) => split!("unsw-nb15-fold1.toml"),
        (DatasetKind::UnswNb15, 2) => split!("unsw-nb15-fold2.toml"),
        (DatasetKind::UnswNb15, _) => split!("unsw-nb15.toml"),
        (DatasetKind::Cic, 1) => split!("cic-ids2017-fold1.toml"),
        (DatasetKind::Cic, 2) => split!("cic-ids2017-fold2.toml"),
        (DatasetKind::Cic, _) => split!("cic-ids2017.toml"),
        (DatasetKind::HttpRequests, 0) => split!("http-requests.toml"),
        (DatasetKind::HttpRequests, _) => None,
    }
}

/// Data, validated and loaded.
struct Loaded {
    frame: FlowFrame,
    /// For web-request payloads: libinjection's decision on each row's payload.
    signatures: Option<Vec<bool>>,
    skips: SkipLog,
    files: Vec<PathBuf>,
    spec: SplitSpec,
    split_name: String,
    split_text: String,
}

fn load(args: &DataArgs) -> Result<Loaded> {
    let format = args
        .format
        .as_deref()
        .map(FileFormat::from_name)
        .transpose()?;
    let dirs = args.data.iter().filter(|p| p.is_dir()).count();
    if dirs > 0 && args.data.len() > 1 {
        bail!("--data takes either one directory or a list of files, not both");
    }
    let kind = match (&args.dataset, format) {
        (Some(name), _) => DatasetKind::from_name(name)?,
        (None, Some(f)) => f.kind(),
        (None, None) if dirs == 0 => metaids_ingest::detect_format(&args.data[0])?.kind(),
        (None, None) => bail!("--data is a directory: say which dataset it holds with --dataset (nsl-kdd, unsw-nb15, cic, http-requests)"),
    };
    let (split_name, split_text) = match &args.split {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read split file {}", p.display()))?,
        ),
        None => {
            let fold = args.fold.unwrap_or(0);
            let (n, t) = builtin_split(kind, fold).with_context(|| {
                format!(
                    "{kind} has no built-in fold {fold} (http-requests has one built-in split \
                     (fold 0) so far); give a split with --split FILE"
                )
            })?;
            (n.to_string(), t.to_string())
        }
    };
    let spec =
        SplitSpec::from_toml(&split_text).with_context(|| format!("split file {split_name}"))?;
    if spec.dataset != kind {
        bail!(
            "split file {split_name} is for dataset {}, but --dataset is {kind}",
            spec.dataset
        );
    }
    let files = if dirs == 1 {
        resolve_files(&args.data[0], &spec.files)?
    } else {
        args.data.clone()
    };
    let opts = ReadOptions {
        format,
        dataset: Some(kind),
        on_bad_row: match args.on_bad_row {
            OnBadRow::Error => BadRowPolicy::Error,
            OnBadRow::Skip => BadRowPolicy::Skip,
        },
    };
    let (frame, signatures, skips) = if kind == DatasetKind::HttpRequests {
        let (frame, signatures) = http_frame(&files)?;
        (frame, Some(signatures), SkipLog::default())
    } else {
        let (frame, skips) = read_files(&files, &opts)?;
        (frame, None, skips)
    };
    if skips.skipped > 0 {
        eprintln!("skipped {} malformed row(s); first ones:", skips.skipped);
        for e in &skips.examples {
            eprintln!("  {e}");
        }
    }
    for f in &frame.files {
        if !f.missing_features.is_empty() {
            eprintln!(
                "note: {} lacks {} feature(s), read as missing: {}",
                f.path,
                f.missing_features.len(),
                f.missing_features.join(", ")
            );
        }
    }
    Ok(Loaded {
        frame,
        signatures,
        skips,
        files,
        spec,
        split_name,
        split_text,
    })
}

/// Web-request payload files (`family,source,payload`, plain or `.gz`) as one frame of the
/// `http-requests` layout, with libinjection's decision on each payload (the signature baseline);
/// a bad row is an error naming its file and line.
fn http_frame(files: &[PathBuf]) -> Result<(FlowFrame, Vec<bool>)> {
    let mut frame = FlowFrame::new(DatasetKind::HttpRequests.layout());
    let mut flags = Vec::new();
    let mut failed = 0usize;
    for path in files {
        let (name, input) = requests_cmd::open_named(path)?;
        let payloads = metaids_http::payloads::read_payloads(input, &name)?;
        metaids_http::features::push_payloads(&mut frame, &name, &payloads);
        for p in &payloads {
            let s = metaids_http::signature::libinjection(p.payload.as_bytes());
            failed += usize::from(s.failed);
            flags.push(s.flagged());
        }
    }
    if failed > 0 {
        eprintln!("note: libinjection failed on {failed} payload(s), counted as not flagged");
    }
    Ok((frame, flags))
}

fn eval_config(p: &ProtocolArgs) -> Result<EvalConfig> {
    if p.shots.is_empty() || p.shots.contains(&0) {
        bail!("--shots needs positive K values, e.g. 1,5,10");
    }
    if p.episodes == 0 {
        bail!("--episodes must be at least 1");
    }
    if p.pool_max == 0 {
        bail!("--pool-max must be at least 1");
    }
    if !(p.fpr_budget > 0.0 && p.fpr_budget < 1.0) {
        bail!("--budget must be in (0, 1), e.g. 0.01");
    }
    if p.episodes < 100 {
        eprintln!(
            "note: {} episodes per family; reported figures use at least 100",
            p.episodes
        );
    }
    let mut shots = p.shots.clone();
    shots.sort_unstable();
    shots.dedup();
    Ok(EvalConfig {
        shots,
        episodes: p.episodes,
        seed: p.seed,
        ways: p.ways.max(2),
        fpr_budget: p.fpr_budget,
        pool_max: p.pool_max,
        keep_twins: p.keep_twins,
        ..EvalConfig::default()
    })
}

fn select_methods(
    bench: &Benchmark<'_>,
    names: &[String],
    extra: Vec<Box<dyn FewShotMethod>>,
) -> Result<Vec<Box<dyn FewShotMethod>>> {
    let mut all = bench.baseline_methods();
    let has_model = !extra.is_empty();
    all.extend(extra);
    if names.is_empty() {
        return Ok(all);
    }
    filter_methods(all, names, has_model)
}

/// The methods of `all` that `names` lists (by their command-line keys); an unknown name is an error.
fn filter_methods(
    all: Vec<Box<dyn FewShotMethod>>,
    names: &[String],
    has_model: bool,
) -> Result<Vec<Box<dyn FewShotMethod>>> {
    let key = |m: &str| {
        // Budget-matched baselines are named "<baseline> @α% FPR"; their key is "<key>@budget".
        let (base, budget) = match m.split_once(" @") {
            Some((b, _)) => (b, "@budget"),
            None => (m, ""),
        };
        let k = match base {
            "nearest-centroid" => "nearest-centroid",
            "knn (zero-shot)" => "knn",
            "knn+shots" => "knn+shots",
            "random-forest (zero-shot)" => "forest",
            "random-forest+shots" => "forest+shots",
            "libinjection (signatures)" => "libinjection",
            "protonet (zero-shot)" => "protonet-zero-shot",
            other => other,
        };
        format!("{k}{budget}")
    };
    for n in names {
        if n.starts_with("protonet") && !has_model {
            bail!("method {n:?} needs a trained model: add --model MODEL (see `metaids train`)");
        }
        if !all.iter().any(|m| key(&m.name()) == *n) {
            bail!("unknown method {n:?}: expected nearest-centroid, knn, knn+shots, forest, forest+shots, forest@budget, forest+shots@budget, tfidf-logreg+shots@budget, tfidf-forest+shots@budget, libinjection (http-requests only), protonet, protonet+known, protonet+unknown, protonet+finetune, protonet-zero-shot");
        }
    }
    Ok(all
        .into_iter()
        .filter(|m| names.contains(&key(&m.name())))
        .collect())
}

fn run_benchmark(
    loaded: &Loaded,
    p: &ProtocolArgs,
    extra: Vec<Box<dyn FewShotMethod>>,
) -> Result<Report> {
    run_benchmark_seeded(loaded, p, extra, Vec::new())
}

/// [`run_benchmark`] with the model rows of several trained models (seed, rows), pooled over seeds.
fn run_benchmark_seeded(
    loaded: &Loaded,
    p: &ProtocolArgs,
    extra: Vec<Box<dyn FewShotMethod>>,
    seeded: Vec<(u64, Vec<Box<dyn FewShotMethod>>)>,
) -> Result<Report> {
    let cfg = eval_config(p)?;
    let started = Instant::now();
    let bench = Benchmark::new(
        &loaded.frame,
        &loaded.spec,
        &loaded.split_name,
        &loaded.split_text,
        cfg,
        PreprocessConfig::default(),
        BaselineConfig::default(),
    )?;
    let bench = match &loaded.signatures {
        Some(flags) => bench.with_signatures(metaids_eval::SignatureBaseline::new(
            "libinjection (signatures)",
            "libinjection's SQLi fingerprints and XSS detector on the payload text (a Rust port), no training and no shots: one fixed operating point",
            flags.clone(),
        )),
        None => bench,
    };
    // With seeded models the model rows come from them; the names split into the two sets.
    let (model_names, baseline_names): (Vec<String>, Vec<String>) = p
        .methods
        .iter()
        .cloned()
        .partition(|n| n.starts_with("protonet"));
    let seeds: Vec<u64> = seeded.iter().map(|(s, _)| *s).collect();
    let mut methods = if seeds.is_empty() {
        select_methods(&bench, &p.methods, extra)?
    } else if !p.methods.is_empty() && baseline_names.is_empty() {
        Vec::new()
    } else {
        select_methods(&bench, &baseline_names, Vec::new())?
    };
    let mut seeded = seeded
        .into_iter()
        .map(|(_, rows)| {
            if p.methods.is_empty() {
                Ok(rows)
            } else {
                filter_methods(rows, &model_names, true)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let total =
        bench.plan.work() * (methods.len() + seeded.iter().map(Vec::len).sum::<usize>()) as u64;
    let bar = progress::Progress::new(
        p.quiet,
        total,
        "{spinner} {msg:28} [{bar:30}] {pos}/{len} tasks, eta {eta}",
        "evaluate",
    );
    let progress = |name: &str, n: u64| {
        if bar.message() != name {
            bar.set_message(name.to_string());
        }
        bar.inc(n);
    };
    let files = loaded
        .files
        .iter()
        .zip(&loaded.frame.files)
        .map(|(path, f)| {
            Ok(DataFile {
                path: path.display().to_string(),
                sha256: metaids_ingest::file_sha256(path)?,
                rows: f.rows,
                skipped: f.skipped,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let report = bench.run_seeded(&mut methods, &mut seeded, &seeds, files, &progress)?;
    bar.finish_and_clear();
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "benchmark done");
    println!("{}", report.markdown());
    if let Some(m) = &p.per_family {
        let k = if report.protocol.config.shots.contains(&5) {
            5
        } else {
            report.protocol.config.shots[0]
        };
        match report.per_family_markdown(m, k) {
            Some(t) => println!("{t}"),
            None => {
                eprintln!("note: no results for method {m:?} (use the name shown in the table)")
            }
        }
    }
    if let Some(path) = &p.json {
        write_atomic(path, report.to_json().as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &p.episodes_csv {
        let csv = report
            .episodes_csv()
            .context("writing the per-episode CSV")?;
        write_atomic(path, &csv)?;
        eprintln!("wrote {}", path.display());
    }
    eprintln!(
        "{} rows ({} benign training, {} benign query), {} skipped; {:.1} s",
        loaded.frame.len(),
        bench.split.benign_train.len(),
        bench.split.benign_query.len(),
        loaded.skips.skipped,
        started.elapsed().as_secs_f64()
    );
    Ok(report)
}

fn evaluate(a: EvaluateArgs) -> Result<()> {
    let loaded = load(&a.data)?;
    let model = match &a.model {
        Some(path) => Some(model_cmd::load_for(path, &loaded, a.force)?),
        None => None,
    };
    let extra = model.as_ref().map(model_cmd::methods).unwrap_or_default();
    let mut seeded = Vec::new();
    for &seed in &a.train_seeds {
        let model = model_cmd::fit_default(&loaded, seed, a.protocol.quiet)?;
        seeded.push((seed, model_cmd::methods(&model)));
    }
    run_benchmark_seeded(&loaded, &a.protocol, extra, seeded)?;
    if let Some(m) = &model {
        model_cmd::report_enrolment(m, &loaded)?;
    }
    Ok(())
}

fn report(a: ReportArgs) -> Result<()> {
    let mut reports = Vec::new();
    for path in &a.json {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read report {}", path.display()))?;
        let report: Report = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a report written by `metaids evaluate --json`",
                path.display()
            )
        })?;
        reports.push((path.display().to_string(), report));
    }
    let html = metaids_eval::html::render(&reports)?;
    write_atomic(&a.out, html.as_bytes())?;
    eprintln!("wrote {} ({} report(s))", a.out.display(), reports.len());
    Ok(())
}

fn stats(a: DataArgs) -> Result<()> {
    let loaded = load(&a)?;
    let f = &loaded.frame;
    println!(
        "dataset {} — {} rows, {} families, {} skipped",
        f.layout.kind,
        f.len(),
        f.families.len(),
        loaded.skips.skipped
    );
    for file in &f.files {
        println!(
            "  {} ({}): {} rows, {} skipped",
            file.path, file.format, file.rows, file.skipped
        );
    }
    let split = match loaded.spec.apply(f) {
        Ok(s) => Some(s),
        Err(e) => {
            println!("\n(no split roles: {e})");
            None
        }
    };
    let role = |fam: &str| match &split {
        None => "-",
        Some(s) if fam == s.benign => "benign",
        Some(s) if s.novel.contains_key(fam) => "novel",
        Some(s) if s.validation.contains_key(fam) => "validation",
        Some(_) => "seen",
    };
    // Exact duplicates (feature values only): repeats within a family, values that also carry another
    // label, and rows with a twin among the rows a model trains on (benign training pool, seen and
    // validation families).
    let dups = metaids_core::duplicates::DuplicateIndex::new(f);
    let training = dups.reference(
        &split
            .as_ref()
            .map(|s| s.training_rows())
            .unwrap_or_default(),
    );
    let by_family = f.rows_by_family();
    println!(
        "\n| family | rows | role ({}) | distinct | repeated | other-label twins | twins in training rows |\n|---|---:|---|---:|---:|---:|---:|",
        loaded.split_name
    );
    for (fam, n) in f.family_counts() {
        let rows = by_family.get(&fam).map_or(&[][..], Vec::as_slice);
        let c = dups.counts(rows, &training);
        println!(
            "| {fam} | {n} | {} | {} | {} | {} | {} |",
            role(&fam),
            c.distinct,
            c.repeated(),
            c.conflicting,
            c.twins_in_reference
        );
    }
    let all: Vec<usize> = (0..f.len()).collect();
    let c = dups.counts(&all, &dups.reference(&[]));
    println!(
        "\nexact duplicates: {} of {} rows repeat another ({:.1}%), {} carry values that also appear under another label ({:.1}%)",
        c.repeated(),
        c.rows,
        100.0 * c.repeated() as f64 / c.rows.max(1) as f64,
        c.conflicting,
        100.0 * c.conflicting as f64 / c.rows.max(1) as f64
    );
    if let Some(s) = split.as_ref().filter(|s| !s.absent.is_empty()) {
        println!("\nnamed in the split but absent: {}", s.absent.join(", "));
    }
    Ok(())
}

fn bench(a: BenchArgs) -> Result<()> {
    let repeat = a.repeat.max(1);
    let mut best_read = f64::INFINITY;
    let mut loaded = None;
    for _ in 0..repeat {
        let t = Instant::now();
        let l = load(&a.data)?;
        best_read = best_read.min(t.elapsed().as_secs_f64());
        loaded = Some(l);
    }
    let Some(loaded) = loaded else {
        bail!("nothing read")
    };
    let frame = &loaded.frame;
    let rows: Vec<usize> = (0..frame.len()).collect();
    let bytes: u64 = loaded.files.iter().map(|p| file_len(p)).sum();
    let norm = Normaliser::fit(frame, &rows, PreprocessConfig::default())?;
    let mut best_tf = f64::INFINITY;
    // One output buffer, reused as a streaming pipeline would.
    let mut out = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        norm.transform_into(frame, &rows, &mut out)?;
        best_tf = best_tf.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&out);
    }
    let n = frame.len() as f64;
    println!(
        "{} rows, {} files, {:.1} MB on disk (best of {repeat}, one thread)",
        frame.len(),
        loaded.files.len(),
        bytes as f64 / 1e6
    );
    println!(
        "read + parse:        {:>10.0} rows/s  ({:.1} MB/s)",
        n / best_read,
        bytes as f64 / 1e6 / best_read
    );
    println!("preprocess:          {:>10.0} rows/s", n / best_tf);
    println!(
        "read + preprocess:   {:>10.0} rows/s per core",
        n / (best_read + best_tf)
    );
    Ok(())
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}
