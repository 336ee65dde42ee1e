//! Detector throughput (not a test, no criterion): flows → verdicts per second and pcap → alerts
//! packets per second, with the stages (preprocess, embed, decide) timed apart. Run it on one core:
//!
//! ```text
//! RAYON_NUM_THREADS=1 taskset -c 0 cargo bench -p metaids-detect --bench detect -- [--model DIR] [--pcap FILE] [--rows N]
//! ```
//!
//! Without `--model` it meta-trains a model of the default shape (256 wide, 2 residual blocks, 64-d)
//! for a few steps on the shared CIC-IDS2017 files: its weights do not matter for speed, its shape
//! does. The flows are the 43,419 corrected CIC rows, cycled to `--rows` (default 200,000); one threat
//! is armed from 5 SSH-Patator rows. `--pcap` (e.g. the capture `scripts/bench-flows.sh` builds) is read
//! through the flow engine with EVE alerts written to a temporary file.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use metaids_core::preprocess::PreprocessConfig;
use metaids_core::split::SplitSpec;
use metaids_detect::{
    Detector, DetectorOptions, EveSink, Pipeline, PipelineOptions, Sink, VerdictSink,
};
use metaids_flow::FlowConfig;
use metaids_ingest::{read_files, resolve_files, ReadOptions};
use metaids_library::{Threat, ThreatDraft};
use metaids_model::{train, EncoderConfig, Provenance, ThreatModel, TrainConfig};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn best<F: FnMut() -> Res<()>>(reps: usize, mut f: F) -> Res<f64> {
    let mut b = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        b = b.min(t.elapsed().as_secs_f64());
    }
    Ok(b)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let rows_wanted: usize = opt("--rows").map_or(Ok(200_000), |s| s.parse())?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("splits/cic-ids2017.toml"))?;
    let spec = SplitSpec::from_toml(&text)?;
    let data = root.join("../shared/data/cic-ids2017-improved");
    let files = resolve_files(&data, &spec.files)?;
    let (frame, _) = read_files(
        &files,
        &ReadOptions {
            dataset: Some(spec.dataset),
            ..Default::default()
        },
    )?;
    let model: Arc<ThreatModel> = Arc::new(match opt("--model") {
        Some(p) => metaids_model::load(p.as_ref())?,
        None => {
            let split = spec.apply(&frame)?;
            let t = Instant::now();
            let m = train(
                &frame,
                &split,
                PreprocessConfig::default(),
                EncoderConfig::for_input(0),
                &TrainConfig {
                    steps: 20,
                    eval_every: 10,
                    validation_episodes: 2,
                    ..TrainConfig::default()
                },
                Provenance::default(),
                &mut |_| {},
            )?;
            eprintln!(
                "trained a default-shape model for the bench in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            m
        }
    });
    let cfg = model.encoder.config().clone();
    println!(
        "model: input {} → hidden {} × {} blocks → embedding {}; RAYON_NUM_THREADS={}",
        cfg.input_dim,
        cfg.hidden,
        cfg.depth,
        cfg.embedding,
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );
    let ssh: Vec<usize> = (0..frame.len())
        .filter(|&r| frame.label(r) == "SSH-Patator")
        .take(5)
        .collect();
    let support = model.embed_rows(&frame, &ssh)?;
    let draft =
        ThreatDraft::from_embeddings("SSH-Patator", &support, model.dim(), "bench", "bench");
    let threat = Threat::enrol(
        &model.reference,
        1,
        &draft,
        model.reference.fpr_budget,
        String::new(),
    )?;
    let detector = Detector::new(
        Arc::clone(&model),
        vec![threat.clone()],
        DetectorOptions::default(),
        1,
    )?;

    let rows: Vec<usize> = (0..rows_wanted).map(|i| i % frame.len()).collect();
    let n = rows.len() as f64;
    let batch = 1024;
    let mut x = Vec::new();
    let t_pre = best(3, || {
        for chunk in rows.chunks(batch) {
            model.normaliser.transform_into(&frame, chunk, &mut x)?;
            std::hint::black_box(&x);
        }
        Ok(())
    })?;
    let mut all_x = Vec::new();
    model.normaliser.transform_into(&frame, &rows, &mut all_x)?;
    let d_in = model.normaliser.output_dim();
    let t_emb = best(3, || {
        for chunk in all_x.chunks(batch * d_in) {
            std::hint::black_box(detector.embed(chunk)?);
        }
        Ok(())
    })?;
    let emb = detector.embed(&all_x)?;
    let mut verdicts = Vec::new();
    let t_dec = best(3, || {
        for (chunk, x) in emb
            .chunks(batch * detector.dim())
            .zip(all_x.chunks(batch * d_in))
        {
            detector.decide_batch(chunk, x, &mut verdicts);
            std::hint::black_box(&verdicts);
        }
        Ok(())
    })?;
    println!(
        "flows → verdicts, batch {batch}, {} rows (best of 3, one thread):",
        rows.len()
    );
    println!("  preprocess            {:>12.0} flows/s", n / t_pre);
    println!("  embed                 {:>12.0} flows/s", n / t_emb);
    println!("  decide (embeddings)   {:>12.0} flows/s", n / t_dec);
    println!(
        "  preprocess+embed+decide {:>10.0} flows/s",
        n / (t_pre + t_emb + t_dec)
    );

    // The whole pipeline on frame rows: identifiers, verdicts, dedup, explanations, a verdicts file.
    let dir = std::env::temp_dir().join(format!("metaids-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut big = metaids_core::FlowFrame::new(frame.layout.clone());
    // Cycle the rows into one frame so the pipeline sees `rows` flows.
    {
        let map = metaids_core::record::ColumnMap::from_header(
            metaids_core::FileFormat::CicImproved,
            &metaids_core::schema::cic_improved_header()
                .iter()
                .map(|s| s.as_bytes())
                .collect::<Vec<_>>(),
        )?;
        let f = big.add_file("bench", &map);
        let mut row = metaids_core::record::RowBuf::default();
        for (line, &r) in rows.iter().enumerate() {
            row.numeric = frame.numeric_row(r).to_vec();
            row.categorical = frame.categorical_row(r).map(str::to_string).collect();
            row.label = frame.label(r).to_string();
            let ids = frame.identifiers(r);
            row.identifiers = map
                .identifier_names
                .iter()
                .map(|n| {
                    ids.iter()
                        .find(|(k, _)| k == n)
                        .map_or(String::new(), |(_, v)| v.to_string())
                })
                .collect();
            big.push(
                &row,
                metaids_core::RowSource {
                    file: f,
                    line: line as u64 + 2,
                },
            );
        }
    }
    let mut alerts = 0;
    let t_pipe = best(3, || {
        let d = Detector::new(
            Arc::clone(&model),
            vec![threat.clone()],
            DetectorOptions::default(),
            1,
        )?;
        let sinks: Vec<Box<dyn Sink>> = vec![
            Box::new(VerdictSink::create(&dir.join("verdicts.jsonl"))?),
            Box::new(EveSink::create(&dir.join("eve.json"), false)?),
        ];
        let mut p = Pipeline::new(d, sinks, PipelineOptions::default())?;
        p.push_frame(&big, &mut |_| {})?;
        alerts = p.finish()?.alerts;
        Ok(())
    })?;
    println!(
        "  pipeline (frame rows → verdicts file + EVE alerts) {:>10.0} flows/s ({alerts} alerts)",
        n / t_pipe
    );

    if let Some(pcap) = opt("--pcap") {
        let mut stats = (0u64, 0u64, 0u64);
        let t = best(1, || {
            let d = Detector::new(
                Arc::clone(&model),
                vec![threat.clone()],
                DetectorOptions::default(),
                1,
            )?;
            let sinks: Vec<Box<dyn Sink>> = vec![Box::new(EveSink::create(
                &dir.join("pcap-eve.json"),
                false,
            )?)];
            let mut p = Pipeline::new(d, sinks, PipelineOptions::default())?;
            let input = BufReader::with_capacity(1 << 20, File::open(&pcap)?);
            let s = p.push_capture(input, &pcap, FlowConfig::default())?;
            let sum = p.finish()?;
            stats = (s.packets(), s.flows(), sum.alerts);
            Ok(())
        })?;
        println!(
            "pcap → alerts {pcap}: {} packets, {} flows, {} alerts in {t:.2} s: {:.0} packets/s, {:.0} flows/s",
            stats.0,
            stats.1,
            stats.2,
            stats.0 as f64 / t,
            stats.1 as f64 / t
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
