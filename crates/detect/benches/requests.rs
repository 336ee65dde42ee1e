//! Web-request scoring throughput (issue 16; not a test, no criterion): raw HTTP/1.1 requests →
//! verdicts per second on one core, with the stages timed apart. Run it on one core:
//!
//! ```text
//! RAYON_NUM_THREADS=1 taskset -c 0 cargo bench -p metaids-detect --bench requests -- [--model DIR] [--requests N]
//! ```
//!
//! Without `--model` it meta-trains a model of the default shape for a few steps on the vendored
//! payload families (`data/http`): its weights do not matter for speed, its shape does. The
//! requests (default 200,000) are built from the vendored payloads: one to three benign
//! parameter values each (CSIC 2010 values, percent-encoded), every 50th with a template-injection
//! string in one more parameter; one threat is armed from 5 template-injection strings.
//!
//! Stages: parse (httparse head, body framing) and the values to score (query and form pairs);
//! feature rows (shape counts and hashed n-grams); preprocess + embed + decide of the rows; and
//! the whole pipeline as `metaids detect` runs it — rows, request facts with the EVE `http`
//! object, `Pipeline::push_requests`, a verdicts file and EVE alerts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use metaids_core::frame::RowSource;
use metaids_core::preprocess::PreprocessConfig;
use metaids_core::schema::DatasetKind;
use metaids_core::split::SplitSpec;
use metaids_core::FlowFrame;
use metaids_detect::eve::{EveHttp, HttpFacts, MatchedValue};
use metaids_detect::{
    Detector, DetectorOptions, EveSink, FlowMeta, Origin, Pipeline, PipelineOptions, Sink,
    VerdictSink,
};
use metaids_http::features::RowWriter;
use metaids_http::params::{self, encode};
use metaids_http::raw::{parse_request, Limits};
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

/// Parses every request and turns its values into rows of `frame` and facts in `metas`
/// (`with_facts`: the EVE `http` object and the excerpts, as `metaids detect` builds them).
fn rows_of(
    requests: &[Vec<u8>],
    frame: &mut FlowFrame,
    counts: &mut Vec<usize>,
    metas: &mut Vec<FlowMeta>,
    with_facts: bool,
) -> Res<()> {
    let limits = Limits::default();
    let file = match frame.files.len() {
        0 => RowWriter::add_file(frame, "bench"),
        n => n as u32 - 1,
    };
    let mut w = RowWriter::new();
    let source: Arc<str> = Arc::from("bench");
    for (i, bytes) in requests.iter().enumerate() {
        let (r, _) = parse_request(bytes, &limits)?;
        let values = params::values(&r);
        let at = RowSource {
            file,
            line: i as u64 + 1,
        };
        for v in &values.values {
            w.push(frame, at, "request", "", v.text.as_bytes());
        }
        counts.push(values.values.len());
        if with_facts {
            let matched = values
                .values
                .iter()
                .map(|v| MatchedValue::new(v.field(), &v.text, v.truncated))
                .collect();
            metas.push(FlowMeta::request(
                Origin {
                    source: Arc::clone(&source),
                    index: i as u64 + 1,
                },
                None,
                None,
                None,
                HttpFacts {
                    http: EveHttp {
                        hostname: r.host(),
                        url: r.target.clone(),
                        http_method: r.method.clone(),
                        protocol: r.minor_version.map(|v| format!("HTTP/1.{v}")),
                        http_user_agent: r.user_agent(),
                        ..EveHttp::default()
                    },
                    values: matched,
                },
            ));
        }
    }
    Ok(())
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
    let wanted: usize = opt("--requests").map_or(Ok(200_000), |s| s.parse())?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("data/http/payloads.csv.gz");
    let payloads =
        metaids_http::payloads::read_payloads(metaids_ingest::open(&path)?, "payloads.csv.gz")?;
    let mut frame = FlowFrame::new(DatasetKind::HttpRequests.layout());
    metaids_http::features::push_payloads(&mut frame, "payloads.csv.gz", &payloads);
    let model: Arc<ThreatModel> = Arc::new(match opt("--model") {
        Some(p) => metaids_model::load(p.as_ref())?,
        None => {
            let text = std::fs::read_to_string(root.join("splits/http-requests.toml"))?;
            let split = SplitSpec::from_toml(&text)?.apply(&frame)?;
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
    let of = |family: &str| -> Vec<&str> {
        payloads
            .iter()
            .filter(|p| p.family == family && !p.payload.is_empty())
            .map(|p| p.payload.as_str())
            .collect()
    };
    let (benign, ssti) = (of("benign"), of("ssti"));
    let support: Vec<usize> = (0..frame.len())
        .filter(|&r| frame.label(r) == "ssti")
        .take(5)
        .collect();
    let emb = model.embed_rows(&frame, &support)?;
    let draft = ThreatDraft::from_embeddings("ssti", &emb, model.dim(), "bench", "bench");
    let threat = Threat::enrol(
        &model.reference,
        1,
        &draft,
        model.reference.fpr_budget,
        String::new(),
    )?;

    let names = ["nombre", "ciudad", "email", "id"];
    let requests: Vec<Vec<u8>> = (0..wanted)
        .map(|i| {
            let n = 1 + i % 3;
            let mut q: Vec<String> = (0..n)
                .map(|k| {
                    let v = benign[(i * 7 + k * 13) % benign.len()];
                    format!("{}={}", names[k], encode(v))
                })
                .collect();
            if i % 50 == 0 {
                q.push(format!("q={}", encode(ssti[i / 50 % ssti.len()])));
            }
            format!(
                "GET /tienda1/publico/anadir.jsp?{} HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: Mozilla/5.0 (compatible; Konqueror/3.5; Linux)\r\nAccept: text/html\r\n\r\n",
                q.join("&")
            )
            .into_bytes()
        })
        .collect();
    let n = requests.len() as f64;
    let bytes: usize = requests.iter().map(Vec::len).sum();

    let limits = Limits::default();
    let t_parse = best(3, || {
        for b in &requests {
            let (r, _) = parse_request(b, &limits)?;
            std::hint::black_box(params::values(&r));
        }
        Ok(())
    })?;
    let mut rows = FlowFrame::new(DatasetKind::HttpRequests.layout());
    let mut counts = Vec::new();
    let t_rows = best(3, || {
        rows = FlowFrame::new(DatasetKind::HttpRequests.layout());
        counts.clear();
        rows_of(&requests, &mut rows, &mut counts, &mut Vec::new(), false)
    })?;
    let values = rows.len() as f64;
    let detector = Detector::new(
        Arc::clone(&model),
        vec![threat.clone()],
        DetectorOptions::default(),
        1,
    )?;
    let batch = 1024;
    let all: Vec<usize> = (0..rows.len()).collect();
    let mut x = Vec::new();
    let mut verdicts = Vec::new();
    let t_score = best(3, || {
        for chunk in all.chunks(batch) {
            detector.normaliser().transform_into(&rows, chunk, &mut x)?;
            let e = detector.embed(&x)?;
            detector.decide_batch(&e, &x, &mut verdicts);
            std::hint::black_box(&verdicts);
        }
        Ok(())
    })?;

    let dir = std::env::temp_dir().join(format!("metaids-bench-requests-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut summary = None;
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
        let mut f = FlowFrame::new(DatasetKind::HttpRequests.layout());
        let (mut c, mut m) = (Vec::new(), Vec::new());
        for chunk in requests.chunks(batch) {
            rows_of(chunk, &mut f, &mut c, &mut m, true)?;
            p.push_requests(&f, &c, std::mem::take(&mut m))?;
            f.clear_rows();
            c.clear();
        }
        summary = Some(p.finish()?);
        Ok(())
    })?;
    let s = summary.expect("ran");
    println!(
        "{} requests ({:.1} MB, {:.2} values each), batch {batch}, best of 3, one thread:",
        requests.len(),
        bytes as f64 / 1e6,
        values / n
    );
    println!("  parse + values          {:>12.0} requests/s", n / t_parse);
    println!("  parse + feature rows    {:>12.0} requests/s", n / t_rows);
    println!(
        "  preprocess+embed+decide {:>12.0} requests/s ({:.0} values/s)",
        n / t_score,
        values / t_score
    );
    println!(
        "  pipeline (bytes → verdicts file + EVE alerts) {:>10.0} requests/s ({} alerts, {} threat verdicts)",
        n / t_pipe,
        s.alerts,
        s.threat_total()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
