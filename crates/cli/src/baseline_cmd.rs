//! `metaids baseline`: reads the site's benign flows (captures or flow files), embeds them, learns
//! the site profile (the decision core's `SiteProfile`) and stores it with every threat refitted on
//! it (the library's `baseline`). Printing and argument checks only; the rules live in
//! `metaids-decide`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use metaids_decide::{Decider, ProfileOptions, ThreatRule};
use metaids_ingest::{read_files, ReadOptions};
use metaids_library::{
    learn_site_profile, source_addresses, LearnOptions, ModelIdentity, ThreatLibrary,
};

use crate::args::BaselineArgs;
use crate::threat_cmd::{from_capture, Candidates};

/// Most baseline flows listed as flagged by a threat.
const LISTED: usize = 20;

fn author(a: &BaselineArgs) -> String {
    crate::who(a.author.as_deref())
}

/// Flow-file rows (with `label` when given) as candidates.
fn from_flow_files(
    paths: &[PathBuf],
    label: Option<&str>,
    model: &metaids_model::ThreatModel,
) -> Result<Candidates> {
    let opts = ReadOptions {
        dataset: Some(model.normaliser.kind),
        ..ReadOptions::default()
    };
    let (frame, _) = read_files(paths, &opts).with_context(|| {
        format!(
            "reading flows for the model's dataset ({})",
            model.normaliser.kind
        )
    })?;
    model.check_layout(&frame.layout)?;
    let rows: Vec<usize> = (0..frame.len())
        .filter(|&r| label.is_none_or(|l| frame.label(r) == l))
        .collect();
    let locators = (0..frame.len())
        .map(|r| (frame.provenance(r), format!("row {}", r + 1)))
        .collect();
    Ok(Candidates {
        frame,
        rows,
        locators,
    })
}

/// Most flows a live learning window keeps (the same cap as captures).
const MAX_LIVE_FLOWS: usize = 200_000;

/// Flows captured live on `interface` until --duration, --packets or Ctrl-C, as candidates (with
/// their identifiers, for the per-source cap).
fn from_interface(
    a: &BaselineArgs,
    interface: &str,
    model: &metaids_model::ThreatModel,
) -> Result<Candidates> {
    if model.normaliser.kind != metaids_core::schema::DatasetKind::Cic {
        bail!(
            "--interface gives CICFlowMeter flows, but the model was trained on {} data",
            model.normaliser.kind
        );
    }
    let mut live = metaids_capture::LiveConfig::new(interface);
    live.filter = a.bpf.clone();
    live.max_packets = a.packets;
    let mut source = crate::extract::open_live(live, a.duration, &a.flow)?;
    let name = metaids_flow::FlowSource::name(&source).to_string();
    let mut rows = metaids_flow::FrameBuilder::with_identifiers(&name);
    let mut locators = Vec::new();
    eprintln!("learning from {interface} (Ctrl-C ends the window)");
    let report = metaids_flow::for_each_flow(&mut source, |flow| -> Result<()> {
        if locators.len() < MAX_LIVE_FLOWS {
            locators.push((
                name.clone(),
                format!("flow {} at {}", flow.flow_id(), flow.timestamp()),
            ));
            rows.push(&flow);
        }
        Ok(())
    })?;
    let stats = source.stats();
    eprintln!(
        "{interface}: {} packets, {} flows ({:?})",
        stats.packets, stats.flows, stats.stop
    );
    for w in report.warnings() {
        eprintln!("warning: {name}: {w}");
    }
    if locators.len() >= MAX_LIVE_FLOWS {
        eprintln!("warning: kept the first {MAX_LIVE_FLOWS} flows of the window");
    }
    let frame = rows.take();
    let rows: Vec<usize> = (0..frame.len()).collect();
    Ok(Candidates {
        frame,
        rows,
        locators,
    })
}

/// Runs the command.
pub fn run(a: BaselineArgs) -> Result<()> {
    let started = Instant::now();
    let model = metaids_model::load(&a.model)
        .with_context(|| format!("cannot load model {}", a.model.display()))?;
    let web = crate::web::is_web_model(&a.model, &model, &a.requests)?;
    if web && (!a.flows.is_empty() || a.interface.is_some() || a.select.is_some()) {
        bail!(
            "model {} was trained on web-request payloads: learn its baseline from the site's requests (--pcap, --access-log, --request-file)",
            a.model.display()
        );
    }
    let mut web_sources = None;
    let mut budget = a.budget;
    let c = if web {
        let w = crate::web::baseline_rows(&a.pcap, &a.requests)?;
        budget = w.value_budget(a.budget);
        println!(
            "{} requests with {} values ({:.2} a request): budget {} per request, {budget:.6} per value \
             (a request is flagged when any of its values is; by the union bound at most the budget's share \
             of the window's requests then is)",
            w.requests,
            w.candidates.rows.len(),
            w.candidates.rows.len() as f64 / w.requests.max(1) as f64,
            a.budget
        );
        web_sources = Some(w.sources);
        w.candidates
    } else if let Some(interface) = &a.interface {
        from_interface(&a, interface, &model)?
    } else if a.pcap.is_empty() {
        from_flow_files(&a.flows, a.label.as_deref(), &model)?
    } else {
        from_capture(
            &a.pcap,
            a.select.as_deref(),
            crate::extract::flow_config(&a.flow)?,
            &model,
        )?
    };
    if c.rows.is_empty() {
        bail!(
            "no flows to learn from{}: a baseline needs the site's benign traffic",
            a.label
                .as_ref()
                .map_or_else(String::new, |l| format!(" (no row labelled {l:?})"))
        );
    }
    let sources = web_sources.unwrap_or_else(|| source_addresses(&c.frame, &c.rows));
    let options = ProfileOptions {
        budget,
        per_source_cap: a.per_source_cap,
        prototype_share: a.prototype_share,
        seed: a.seed,
        force: a.force,
        confidence: a.confidence,
        in_sample: a.in_sample_rank,
        ..ProfileOptions::default()
    };
    let adapt = match a
        .adapt
        .as_deref()
        .unwrap_or(if web { "none" } else { "normaliser" })
    {
        "normaliser" => true,
        "none" => false,
        other => bail!("--adapt must be normaliser or none, got {other:?}"),
    };
    let threat_rule: ThreatRule = a
        .threat_rule
        .as_deref()
        .unwrap_or(if web { "prototypes" } else { "forest" })
        .parse()
        .context("--threat-rule")?;
    let files: Vec<String> = match &a.interface {
        Some(i) => vec![format!("live:{i}")],
        None => a
            .pcap
            .iter()
            .chain(&a.flows)
            .chain(&a.requests.access_log)
            .chain(&a.requests.request_file)
            .map(|p| p.display().to_string())
            .collect(),
    };

    let existing = if a.library.exists() {
        Some(ThreatLibrary::open(&a.library, &model)?)
    } else if a.dry_run {
        bail!(
            "{} does not exist (a dry run creates nothing)",
            a.library.display()
        );
    } else {
        None
    };
    let learn = LearnOptions {
        profile: options,
        adapt,
        update: a.update,
        force: a.force,
        threat_rule,
        source_context: threat_rule == ThreatRule::Forest && !a.no_source_context,
    };
    let learnt = learn_site_profile(
        &model,
        existing.as_ref(),
        &c.frame,
        &c.rows,
        &sources,
        learn,
    )
    .with_context(|| format!("baseline of {} flows", c.rows.len()))?;
    let (profile, emb, embed_s) = (learnt.profile, learnt.embeddings, learnt.embed_seconds);
    let forest_rows = learnt.forest_rows;
    let dim = model.dim();
    let normaliser = model.site_normaliser(profile.adaptation.as_ref())?;
    let library = match existing {
        Some(lib) => lib,
        None => {
            let lib =
                ThreatLibrary::create_with(&a.library, ModelIdentity::of(&model)?, &author(&a))?;
            println!(
                "created threat library {} for model {}",
                a.library.display(),
                lib.identity().model
            );
            lib
        }
    };
    let current = library.current()?;
    let current_adaptation = library.reference(&model)?.1.and_then(|p| p.adaptation);
    println!(
        "baseline: {} flows offered, {} kept after the per-source cap of {} ({} benign prototypes, {} calibration rows; smallest budget they support {:.4})",
        profile.flows_offered,
        profile.flows_kept,
        profile.per_source_cap,
        profile.prototypes.len() / dim,
        profile.calibration_rows(),
        metaids_decide::site::smallest_budget(profile.calibration_rows())
    );
    let per_half =
        metaids_decide::geometry::allowed_above(profile.budget / 2.0, profile.calibration_rows());
    match a.confidence {
        Some(c) => println!(
            "confidence {c}: budget {budget} calibrated at {:.6} on the calibration rows ({per_half} above each half's threshold), \
             so that it holds with {c} for threats and for the unknown rule alike (exact binomial upper bound on each half)",
            profile.budget
        ),
        None if a.in_sample_rank => println!(
            "calibration: budget {budget} at the calibration rows' own rate ({per_half} of {} above each half's threshold; --in-sample-rank)",
            profile.calibration_rows()
        ),
        None => println!(
            "calibration: budget {budget} at the split-conformal rank ({per_half} of {} calibration rows above each half's threshold), \
             so that a benign flow the baseline never saw is flagged with probability at most {budget} on average",
            profile.calibration_rows()
        ),
    }
    for s in &profile.capped {
        println!(
            "  capped source {}: {} flows offered, {} kept",
            s.source, s.offered, s.kept
        );
    }
    println!(
        "adaptation: {}",
        if adapt {
            "the model's numeric columns standardised on the kept baseline flows (--adapt normaliser)"
        } else {
            "none (--adapt none)"
        }
    );
    println!(
        "threat rule: {}",
        match threat_rule {
            ThreatRule::Forest => format!(
                "the site forest (fitted on the {} prototype-share rows and the threats' support flows in feature space{}, calibrated on the {} calibration rows at {:.4}; --threat-rule forest)",
                profile.rows.len() / profile.row_width.max(1) - profile.calibration_rows(),
                if profile.source_context { " with each flow's source context" } else { ", without source context" },
                profile.calibration_rows(),
                profile.budget / 2.0
            ),
            ThreatRule::Prototypes =>
                "each threat's prototypes in the embedding, calibrated jointly (--threat-rule prototypes)".to_string(),
        }
    );
    if a.dry_run {
        let mut threats = current.threats.clone();
        if current_adaptation != profile.adaptation {
            report_reembedded(&metaids_library::reembed_threats(
                &model,
                &normaliser,
                &mut threats,
            )?);
        }
        let (threats, report) =
            metaids_decide::calibrate_jointly(&profile.reference(), &threats, profile.budget)?;
        print_joint(&report, &threats, profile.asked_budget());
        // The forest rule arms only if every threat keeps flows it can learn from.
        metaids_library::site_forest(&normaliser, &profile, &threats)?;
        println!("dry run: nothing stored");
        return Ok(());
    }
    let b = library.baseline(&model, &profile, files, &author(&a))?;
    if let Some(r) = &b.reembedded {
        report_reembedded(r);
    }
    print_joint(&b.report, &b.threats, profile.asked_budget());

    // Baseline flows the refitted threats flag: attacks hiding in the window?
    let mut decider = Decider::new(
        profile.reference(),
        b.threats.clone(),
        profile.unknown_threshold,
    )?;
    let (x, width) = &forest_rows;
    if let Some(a) = metaids_library::site_forest(&normaliser, &profile, &b.threats)? {
        decider = decider
            .with_site_forest(a.forest)?
            .with_rejected_rows(a.vetoes)?;
    }
    let mut listed = 0;
    let mut flagged = 0;
    for (k, e) in emb.chunks_exact(dim).enumerate() {
        let v = decider.decide_flow(e, x.get(k * width..(k + 1) * width).unwrap_or(&[]));
        if let Some(t) = v.flagged() {
            flagged += 1;
            if listed < LISTED {
                let r = c.rows[k];
                println!(
                    "  flagged by {:?}: {} {} (source {})",
                    b.threats[t].name, c.locators[r].0, c.locators[r].1, sources[k]
                );
                listed += 1;
            }
        }
    }
    println!(
        "{flagged} of the {} baseline flows are flagged by a threat{}",
        c.rows.len(),
        if flagged > 0 {
            " (listed above, at most 20): attacks in the baseline window, or threats too close to the site's traffic"
        } else {
            ""
        }
    );
    println!(
        "stored as library version {} ({:.0} flows/s embedded; {:.2} s in all)",
        b.version,
        c.rows.len() as f64 / embed_s.max(1e-9),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn report_reembedded(r: &metaids_library::Reembedded) {
    println!(
        "the adaptation changed: {} threat flows embedded again from their feature values",
        r.flows
    );
    for (name, support, negatives) in &r.dropped {
        println!(
            "  warning: {name}: {support} support and {negatives} negative flows dropped (no feature values kept: confirmed from alerts, or enrolled by an earlier build)"
        );
    }
}

fn print_joint(r: &metaids_decide::JointReport, threats: &[metaids_library::Threat], budget: f64) {
    println!(
        "joint calibration on {} calibration rows at budget {budget} (rows' rate {:.5}): {} flagged by a threat, {} unknown (FPR {:.4}); threat thresholds raised to level {:.3}",
        r.rows, r.budget, r.threat_flagged, r.unknown_flagged, r.fpr, r.level
    );
    for (t, (k, n)) in threats.iter().zip(&r.support_flagged) {
        println!(
            "  {}: threshold {:.4}, flags {k} of its {n} support flows",
            t.name, t.threshold
        );
    }
}
