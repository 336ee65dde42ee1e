//! `metaids demo`: the whole system on data the repository ships — meta-train the threat model on
//! CIC-IDS2017 seen families, benchmark it against the classical baselines on families it never saw
//! (zero-shot and K-shot), extract flows from two real captures, enrol a threat from 5 flows of each,
//! detect them in the rest, and write EVE alerts, verdicts, an nftables script and a report.
//!
//! No detection logic lives here: it drives `metaids-model`, `metaids-library` and `metaids-detect`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use metaids_core::episode::seeded_subsample;
use metaids_detect::{
    Detector, DetectorOptions, EveSink, NftConfig, NftablesSink, Pipeline, PipelineOptions, Sink,
    VerdictKind, VerdictSink,
};
use metaids_flow::FlowConfig;
use metaids_library::{EnrolOptions, ThreatDraft, ThreatLibrary};

use crate::args::{DataArgs, DemoArgs, OnBadRow};
use crate::threat_cmd::{from_capture, Candidates};
use crate::{load, model_cmd, run_benchmark};

/// One demo threat: a capture and what to call its attack.
struct DemoThreat {
    capture: PathBuf,
    name: String,
    category: &'static str,
    candidates: Candidates,
    support_rows: Vec<usize>,
}

/// The name, category and description the demo gives a capture's attack.
fn describe(capture: &Path) -> (String, &'static str) {
    let stem = capture
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    match stem.as_str() {
        "sshguess" => ("SSH password guessing".into(), "Brute force"),
        "ftp-bruteforce" => ("FTP brute force".into(), "Brute force"),
        other => (format!("attack in {other}"), "Attack"),
    }
}

/// Removes a previous demo output (a file or a model directory) so every run starts afresh.
fn clear(path: &Path) -> Result<()> {
    if path.is_dir() {
        std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    } else if path.exists() {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// Runs the demo.
pub fn run(mut a: DemoArgs) -> Result<()> {
    let started = Instant::now();
    if !a.data.is_dir() {
        bail!(
            "{} not found: run the demo from the repository root (it reads the CIC-IDS2017 sample shipped in data/cic-ids2017)",
            a.data.display()
        );
    }
    for c in &a.captures {
        if !c.is_file() {
            bail!(
                "capture {} not found: run the demo from the repository root (it reads data/pcaps)",
                c.display()
            );
        }
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create the output folder {}", a.out.display()))?;
    let mut report = String::new();
    println!(
        "metaids demo: a universal threat model meta-trained on known attack families, tested on families it\n\
         never saw, then used to detect two attacks in real captures from 5 labelled flows each.\n\
         Data shipped in {} (CIC-IDS2017, corrected) and {} (Zeek test traces); outputs in {}.\n",
        a.data.display(),
        a.captures
            .first()
            .and_then(|c| c.parent())
            .map_or_else(|| "-".into(), |p| p.display().to_string()),
        a.out.display()
    );

    // 1. Meta-train on the seen families of the CIC split.
    let data = DataArgs {
        dataset: Some("cic".into()),
        data: vec![a.data.clone()],
        format: None,
        on_bad_row: OnBadRow::Error,
        split: None,
        fold: None,
    };
    let loaded = load(&data)?;
    let split = loaded.spec.apply(&loaded.frame)?;
    println!(
        "1. Meta-training on the seen families (novel, never used: {}) …",
        split.novel.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    let cfg = metaids_model::TrainConfig {
        seed: a.protocol.seed,
        ..metaids_model::TrainConfig::default()
    };
    let (model, seconds) = model_cmd::fit(
        &loaded,
        &split,
        metaids_model::EncoderConfig::for_input(0),
        &cfg,
        a.protocol.quiet,
    )?;
    let model_dir = a.out.join("cic.model");
    clear(&model_dir)?;
    metaids_model::save(&model, &model_dir)?;
    // Reload: the library and the alerts name the model by its weights file's sha256.
    let model = Arc::new(metaids_model::load(&model_dir)?);
    println!(
        "   trained in {seconds:.1} s: validation F1 {:.3} (untrained encoder {:.3}); model written to {}\n",
        model.record.best_f1,
        model.record.history.first().map_or(f64::NAN, |h| h.f1),
        model_dir.display()
    );
    let _ = writeln!(
        report,
        "# metaids demo report\n\n## 1. Model\n\nMeta-trained on the CIC-IDS2017 seen families in {seconds:.1} s \
         (seed {}); validation F1 {:.3} (untrained encoder {:.3}). Novel families, never used for training or \
         any choice: {}. Model: `{}`.\n",
        a.protocol.seed,
        model.record.best_f1,
        model.record.history.first().map_or(f64::NAN, |h| h.f1),
        split.novel.keys().cloned().collect::<Vec<_>>().join(", "),
        model_dir.display()
    );

    // 2. The unseen-family benchmark, zero-shot and K-shot, model rows beside the baselines.
    println!("2. Unseen-family benchmark: the same episodes for every method (macro-F1 ± 95% CI over episodes)");
    if a.protocol.methods.is_empty() {
        a.protocol.methods = crate::DEMO_METHODS.iter().map(|m| m.to_string()).collect();
    }
    let bench = run_benchmark(&loaded, &a.protocol, model_cmd::methods(&model))?;
    model_cmd::report_enrolment(&model, &loaded)?;
    let _ = writeln!(
        report,
        "## 2. Unseen-family benchmark\n\n{}",
        bench.markdown()
    );
    let best = |model_rows: bool| {
        bench
            .results
            .iter()
            .filter(|r| r.shots == 5 && r.method.starts_with("protonet") == model_rows)
            .max_by(|x, y| x.macro_f1.mean.total_cmp(&y.macro_f1.mean))
    };
    if let (Some(b), Some(m)) = (best(false), best(true)) {
        let line = format!(
            "At K=5: best baseline {} {} (FPR {:.3}); best model row {} {} (FPR {:.3}, budget {}).",
            b.method,
            b.macro_f1.display(),
            b.fpr.mean,
            m.method,
            m.macro_f1.display(),
            m.fpr.mean,
            cfg.fpr_budget
        );
        println!("{line}\n");
        let _ = writeln!(report, "{line}\n");
    }

    // 3. Flows from real captures; 4. enrol a threat from 5 flows of each.
    println!(
        "3. Flows from captures, and a threat enrolled from 5 flows of each (guarded enrolment):"
    );
    let library_path = a.out.join("threats.redb");
    clear(&library_path)?;
    let library = ThreatLibrary::create(&library_path, &model)?;
    let mut threats = Vec::new();
    let _ = writeln!(report, "## 3. Threats enrolled from captures\n");
    for (i, capture) in a.captures.iter().enumerate() {
        let candidates = from_capture(
            std::slice::from_ref(capture),
            None,
            metaids_flow::FlowConfig::default(),
            &model,
        )?;
        let (name, category) = describe(capture);
        let support_rows =
            seeded_subsample(&candidates.rows, a.enrol_shots, a.protocol.seed + i as u64);
        // A new library has no baseline yet: the model's own preprocessing.
        let support = crate::threat_cmd::support_flows(
            &model,
            &model.normaliser,
            &candidates,
            &support_rows,
        )?;
        let draft = ThreatDraft {
            name: name.clone(),
            description: format!(
                "enrolled by the demo from {} flows of {}",
                support.len(),
                capture.display()
            ),
            severity: 2,
            category: category.into(),
            support,
            author: "metaids demo".into(),
        };
        let enrolment = library.add(&model, &draft, EnrolOptions::default())?;
        let r = &enrolment.threat.report;
        let line = format!(
            "   {}: {} flows; enrolled {:?} from {} of them (signature {}): flags {} of {} benign reference flows (FPR {:.4}, budget {}) — {}",
            capture.display(),
            candidates.rows.len(),
            name,
            support_rows.len(),
            enrolment.threat.signature_id,
            r.would_flag,
            r.benign_reference_rows,
            r.fpr,
            metaids_decide::threat::shown_rate(r.budget),
            if r.accepted { "accepted" } else { "refused" }
        );
        println!("{line}");
        let _ = writeln!(report, "- {}", line.trim_start_matches(' '));
        threats.push(DemoThreat {
            capture: capture.clone(),
            name,
            category,
            candidates,
            support_rows,
        });
    }
    let version = library.current()?;
    println!(
        "   threat library {} at version {}\n",
        library_path.display(),
        version.version
    );

    // 5. Detect: every flow of the captures through the streaming pipeline, alerts as EVE JSON.
    println!("4. Detection over the captures (streaming pipeline → EVE alerts, verdicts, nftables dry run):");
    let mut detector = Detector::new(
        Arc::clone(&model),
        version.threats.clone(),
        DetectorOptions {
            model_version: Some(library.identity().model.chars().take(16).collect()),
            ..DetectorOptions::default()
        },
        version.version,
    )?;
    detector.set_library_id(library.id());
    let alerts = a.out.join("alerts.json");
    let verdicts = a.out.join("verdicts.jsonl");
    let script = a.out.join("blocklist.nft");
    let sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(EveSink::create(&alerts, false)?),
        Box::new(VerdictSink::create(&verdicts)?),
        Box::new(NftablesSink::create(&script, NftConfig::default())?),
    ];
    let mut pipeline = Pipeline::new(
        detector,
        sinks,
        PipelineOptions {
            run_id: "demo".into(),
            ..PipelineOptions::default()
        },
    )?;
    for t in &threats {
        let file = File::open(&t.capture)
            .with_context(|| format!("cannot open {}", t.capture.display()))?;
        pipeline.push_capture(
            BufReader::new(file),
            &t.capture.display().to_string(),
            FlowConfig::default(),
        )?;
    }
    // Held-out figures with the same detector: the capture flows that were not support, and the
    // benign query pool of the CIC split (rows nothing was trained or calibrated on).
    let detector = pipeline.detector();
    let mut held_out = String::new();
    for t in &threats {
        let rest: Vec<usize> = t
            .candidates
            .rows
            .iter()
            .copied()
            .filter(|r| !t.support_rows.contains(r))
            .collect();
        let emb = model.embed_rows(&t.candidates.frame, &rest)?;
        let x = detector
            .normaliser()
            .transform(&t.candidates.frame, &rest)?;
        let width = detector.normaliser().output_dim();
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for (e, x) in emb.chunks_exact(model.dim()).zip(x.chunks_exact(width)) {
            let v = detector.decide(e, x);
            let key = match (v.kind, v.threat) {
                (VerdictKind::Threat, Some(i)) => detector.threats()[i].name.clone(),
                (kind, _) => kind.name().to_string(),
            };
            *by.entry(key).or_default() += 1;
        }
        let hits = by.get(&t.name).copied().unwrap_or(0);
        let line = format!(
            "   {} ({}): {hits} of the {} flows not used for enrolment detected as {:?} (recall {:.2}); all verdicts: {}",
            t.capture.display(),
            t.category,
            rest.len(),
            t.name,
            hits as f64 / rest.len().max(1) as f64,
            by.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
        );
        println!("{line}");
        let _ = writeln!(held_out, "- {}", line.trim_start_matches(' '));
    }
    let benign = &split.benign_query;
    let emb = model.embed_rows(&loaded.frame, benign)?;
    let x = detector.normaliser().transform(&loaded.frame, benign)?;
    let width = detector.normaliser().output_dim();
    let (mut flagged, mut unknown) = (0usize, 0usize);
    for (e, x) in emb.chunks_exact(model.dim()).zip(x.chunks_exact(width)) {
        match detector.decide(e, x).kind {
            VerdictKind::Threat => flagged += 1,
            VerdictKind::Unknown => unknown += 1,
            VerdictKind::Benign => {}
        }
    }
    let line = format!(
        "   CIC-IDS2017 benign query pool ({} flows never trained or calibrated on): {flagged} flagged as an enrolled threat ({:.2}%), {unknown} unknown anomalies ({:.2}%); budget {}% each",
        benign.len(),
        100.0 * flagged as f64 / benign.len().max(1) as f64,
        100.0 * unknown as f64 / benign.len().max(1) as f64,
        100.0 * model.reference.fpr_budget
    );
    println!("{line}");
    let _ = writeln!(held_out, "- {}", line.trim_start_matches(' '));
    let summary = pipeline.finish()?;
    let counters = format!(
        "   pipeline: {} flows → {} benign, {} threat ({}), {} unknown; {} alerts written ({} suppressed as duplicates per source, threat and 60 s window); {} addresses in the nftables dry-run script",
        summary.flows,
        summary.benign,
        summary.threat_total(),
        summary
            .threats
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        summary.unknown,
        summary.alerts,
        summary.suppressed,
        summary.counter(metaids_detect::Counter::NftElements)
    );
    println!("{counters}");
    println!(
        "   wrote {}, {}, {}\n",
        alerts.display(),
        verdicts.display(),
        script.display()
    );
    let _ = writeln!(
        report,
        "\n## 4. Detection\n\n{held_out}\n{}\n\nOutputs: `{}` (Suricata EVE alerts), `{}` (every flow's verdict), `{}` (nftables dry run).\n",
        counters.trim_start_matches(' '),
        alerts.display(),
        verdicts.display(),
        script.display()
    );

    // Sample alerts, the embedding shortened for the screen.
    println!("5. Sample EVE alerts (metaids.embedding shortened here; the file has it whole):");
    let _ = writeln!(report, "## 5. Sample EVE alerts\n\n```json");
    let file = File::open(&alerts).with_context(|| format!("cannot read {}", alerts.display()))?;
    let mut shown = 0;
    let mut seen_threats = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        let mut v: serde_json::Value = serde_json::from_str(&line)?;
        let sig = v.pointer("/alert/signature").cloned();
        if seen_threats.contains(&sig) {
            continue;
        }
        seen_threats.push(sig);
        if let Some(e) = v.pointer_mut("/metaids/embedding") {
            if let Some(arr) = e.as_array_mut() {
                let n = arr.len();
                arr.truncate(3);
                arr.push(serde_json::Value::String(format!("… {n} values")));
            }
        }
        let text = serde_json::to_string(&v)?;
        println!("{text}");
        let _ = writeln!(report, "{text}");
        shown += 1;
        if shown == 2 {
            break;
        }
    }
    let _ = writeln!(report, "```\n");

    // 6. A network the model never saw: the lab captures, without and with a site baseline.
    if a.lab.is_dir() {
        println!(
            "\n6. Site adaptation on a network the model never saw ({}: real services and attack tools in network namespaces):",
            a.lab.display()
        );
        let (mut flows, _, captured) =
            crate::site_eval::embed_captures(&a.lab, &model, metaids_flow::FlowConfig::default())?;
        // The site forest reads each flow's source context, as `metaids baseline` arms it.
        crate::site_eval::append_source_context(&mut flows, &captured)?;
        let cfg = metaids_eval::site::SiteConfig {
            budgets: vec![0.01],
            shots: a.enrol_shots,
            repeats: 3,
            seed: a.protocol.seed,
            site_forest: true,
            source_context: true,
            timing_shift: metaids_library::timing_shift(&model.normaliser),
            ..metaids_eval::site::SiteConfig::default()
        };
        // The same draws also with `baseline`'s default adaptation (the normaliser refit on the
        // baseline window).
        let refit = |base: &[usize]| {
            crate::site_eval::adapted_embeddings(
                &model,
                &captured,
                base,
                crate::site_eval::SiteAdaptation::Normaliser,
            )
            .map_err(|e| metaids_eval::EvalError::Method {
                method: "normaliser refit".into(),
                message: format!("{e:#}"),
            })
        };
        let site = metaids_eval::site::run(
            &flows,
            &cfg,
            Some(&model.reference),
            Some(("normaliser refit", &refit)),
        )?;
        let rate = |b: &metaids_eval::site::BudgetResult| {
            let r = &b.repeats;
            let mean = |f: &dyn Fn(&metaids_eval::site::RepeatOutcome) -> f64| {
                r.iter().map(f).sum::<f64>() / r.len().max(1) as f64
            };
            (
                mean(&|o| o.benign_rate()),
                mean(&|o| o.macro_named()),
                mean(&|o| o.macro_any()),
            )
        };
        let mut lines = Vec::new();
        if let Some(b) = &site.without_baseline {
            let (fp, named, any) = rate(b);
            lines.push(format!(
                "   without a baseline (the model's CIC-IDS2017 benign reference): {:.1}% of the lab's benign flows flagged; macro recall {named:.2} named, {any:.2} any alert",
                100.0 * fp
            ));
        }
        let adapted = site.adaptation.iter().flat_map(|(_, bs)| bs.iter());
        let forest = site.forest.iter().flat_map(|bs| bs.iter());
        for (b, how) in site
            .budgets
            .iter()
            .map(|b| (b, ", threats named by their prototypes"))
            .chain(adapted.map(|b| (b, ", the normaliser refit on it, threats named by their prototypes")))
            .chain(forest.map(|b| (b, ", the normaliser refit on it, threats named by the site forest with source context (baseline's default)")))
        {
            match &b.refused {
                Some(why) => lines.push(format!(
                    "   site baseline{how} at budget {}: refused ({why})",
                    b.budget
                )),
                None => {
                    let (fp, named, any) = rate(b);
                    lines.push(format!(
                        "   with a site baseline of {} benign flows{how} at budget {}: {:.2}% flagged; macro recall {named:.2} named, {any:.2} any alert",
                        b.repeats.first().map_or(0, |o| o.baseline_offered),
                        b.budget,
                        100.0 * fp
                    ));
                }
            }
        }
        lines.push(format!(
            "   ({} benign flows, {} attack families, {} flows enrolled each, {} seeded repeats; `metaids site-eval --model {} --captures {} --site-context` gives the full table)",
            site.benign_flows,
            site.families.len(),
            cfg.shots,
            cfg.repeats,
            model_dir.display(),
            a.lab.display()
        ));
        let _ = writeln!(report, "## 6. Site adaptation on the lab network\n");
        for l in &lines {
            println!("{l}");
            let _ = writeln!(report, "- {}", l.trim_start());
        }
        let _ = writeln!(report, "\n{}", site.markdown());
    }
    println!("\n7. Web requests (a second model, the same library, verdicts and EVE alerts):");
    let lines = crate::demo_web::run(&a.http_data, &a.out, a.protocol.seed)?;
    let _ = writeln!(report, "\n## 7. Web requests\n");
    for l in &lines {
        let _ = writeln!(report, "- {}", l.trim_start());
    }
    let report_path = a.out.join("report.md");
    metaids_ingest::write_atomic(&report_path, report.as_bytes())?;
    println!(
        "\nReport: {}. Demo finished in {:.0} s.",
        report_path.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "Next: `metaids threat show --library {} \"SSH password guessing\"`, or `metaids feedback --alerts {} --alert demo-1 --reject --library {} --model {}`.",
        library_path.display(),
        alerts.display(),
        library_path.display(),
        model_dir.display()
    );
    Ok(())
}
