//! `metaids site-eval`: reads a directory of labelled captures, embeds their flows with the model
//! and runs the site protocol of [`metaids_eval::site`]. Labels, reading and printing only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use metaids_decide::ProfileOptions;
use metaids_eval::site::{SiteConfig, SiteFlows, SiteResult};
use metaids_ingest::write_atomic;

use crate::args::SiteEvalArgs;
use crate::threat_cmd::capture_flows;
use metaids_library::source_addresses;

/// The benign label every `benign…` label is folded into.
const BENIGN: &str = "benign";

/// Whether `name` is a capture file this command reads.
fn is_capture(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let n = n.strip_suffix(".gz").unwrap_or(&n);
    n.ends_with(".pcap") || n.ends_with(".pcapng")
}

/// A label as the protocol uses it: `benign…` (any case) is [`BENIGN`].
fn fold(label: &str) -> String {
    let l = label.trim();
    if l.to_ascii_lowercase().starts_with(BENIGN) {
        BENIGN.to_string()
    } else {
        l.to_string()
    }
}

/// The `file → label` table of a LABELS.md: the first Markdown table whose header has `file` and
/// `label` columns (any case; file names may be in backticks). Errors name the line.
fn labels_md(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut cols: Option<(usize, usize)> = None;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('|') {
            if cols.is_some() && !out.is_empty() {
                break;
            }
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').to_string())
            .collect();
        match cols {
            None => {
                let find = |name: &str| cells.iter().position(|c| c.eq_ignore_ascii_case(name));
                if let (Some(f), Some(l)) = (find("file"), find("label")) {
                    cols = Some((f, l));
                }
            }
            Some((f, l)) => {
                if cells
                    .iter()
                    .all(|c| c.chars().all(|ch| matches!(ch, '-' | ':')))
                {
                    continue;
                }
                match (cells.get(f), cells.get(l)) {
                    (Some(file), Some(label)) if !file.is_empty() && !label.is_empty() => {
                        out.insert(file.clone(), fold(label));
                    }
                    _ => bail!(
                        "{} line {}: a row of the labels table needs a file and a label",
                        path.display(),
                        i + 1
                    ),
                }
            }
        }
    }
    if out.is_empty() {
        bail!(
            "{}: no Markdown table with `file` and `label` columns",
            path.display()
        );
    }
    Ok(out)
}

/// Captures with their labels.
type Labelled = Vec<(PathBuf, String)>;

/// The captures of `dir` with their labels.
fn labelled_captures(dir: &Path) -> Result<Labelled> {
    if !dir.is_dir() {
        bail!("--captures must be a directory, got {}", dir.display());
    }
    let md = dir.join("LABELS.md");
    let table = if md.is_file() {
        Some(labels_md(&md)?)
    } else {
        None
    };
    let mut out = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_capture(n))
        .collect();
    names.sort();
    for name in names {
        let label = match &table {
            Some(t) => match t.get(&name) {
                Some(l) => l.clone(),
                None => {
                    eprintln!("warning: {name} is not in LABELS.md; skipped");
                    continue;
                }
            },
            None => fold(name.split('.').next().unwrap_or(&name)),
        };
        out.push((dir.join(&name), label));
    }
    if let Some(t) = &table {
        for file in t.keys() {
            if !dir.join(file).is_file() {
                bail!("LABELS.md names {file}, which is not in {}", dir.display());
            }
        }
    }
    if out.is_empty() {
        bail!(
            "no captures (*.pcap, *.pcapng, plain or .gz) in {}",
            dir.display()
        );
    }
    Ok(out)
}

/// The flows read: one frame per capture, and for each flow (in [`SiteFlows`] order) its frame
/// and row.
pub(crate) struct Captured {
    frames: Vec<(metaids_core::FlowFrame, Vec<usize>)>,
    index: Vec<(usize, usize)>,
    /// Each frame's capture file.
    files: Vec<PathBuf>,
    /// Each flow's position among its capture's flows (1-based, the flow engine's order).
    positions: Vec<usize>,
}

/// The labelled captures of `dir` read into flows and embedded with `model` (captures with no
/// flow are skipped with a warning), with the captures and their labels, and the flows.
pub(crate) fn embed_captures(
    dir: &Path,
    model: &metaids_model::ThreatModel,
    config: metaids_flow::FlowConfig,
) -> Result<(SiteFlows, Labelled, Captured)> {
    let mut captured = Captured {
        frames: Vec::new(),
        index: Vec::new(),
        files: Vec::new(),
        positions: Vec::new(),
    };
    let captures = labelled_captures(dir)?;
    let kernel = metaids_model::ScoringKernel::for_model(model)?;
    let dim = model.dim();
    let mut flows = SiteFlows {
        embeddings: Vec::new(),
        dim,
        labels: Vec::new(),
        sources: Vec::new(),
        benign: BENIGN.into(),
        features: Vec::new(),
        feature_dim: model.normaliser.output_dim(),
    };
    for (path, label) in &captures {
        let c = capture_flows(std::slice::from_ref(path), None, config, model)?;
        if c.rows.is_empty() {
            eprintln!("warning: {}: no flows", path.display());
            continue;
        }
        let x = model.normaliser.transform(&c.frame, &c.rows)?;
        flows.embeddings.extend(kernel.embed(&x)?);
        flows.features.extend_from_slice(&x);
        flows.sources.extend(source_addresses(&c.frame, &c.rows));
        flows
            .labels
            .extend(std::iter::repeat_n(label.clone(), c.rows.len()));
        let f = captured.frames.len();
        captured.index.extend(c.rows.iter().map(|&r| (f, r)));
        captured.positions.extend(1..=c.rows.len());
        captured.frames.push((c.frame, c.rows));
        captured.files.push(path.clone());
    }
    Ok((flows, captures, captured))
}

/// Appends each flow's source context (`metaids_core::context`: its source's flows in the 10 s and
/// 1 s before it and their distinct destination ports, counted within its own capture in the order
/// the flow engine produced the flows) to its feature row, for the site forest: three more columns.
/// (`metaids_library::source_context`, as `metaids baseline` and `threat add` count it.)
pub(crate) fn append_source_context(flows: &mut SiteFlows, captured: &Captured) -> Result<()> {
    use metaids_core::context::CONTEXT_WIDTH;
    let d = flows.feature_dim;
    let n = flows.labels.len();
    anyhow::ensure!(
        flows.features.len() == n * d && captured.index.len() == n,
        "feature rows and flows do not match"
    );
    let mut ctx = Vec::with_capacity(n * CONTEXT_WIDTH);
    for (frame, rows) in &captured.frames {
        ctx.extend(metaids_library::source_context(frame, rows));
    }
    let out = metaids_core::context::with_context(&flows.features, d, &ctx);
    flows.features = out;
    flows.feature_dim = d + CONTEXT_WIDTH;
    Ok(())
}

/// An unsupervised adaptation of the model to the site, fit on the baseline window only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SiteAdaptation {
    /// (b) the normaliser's numeric columns refit.
    Normaliser,
    /// (c) the LayerNorms' gains and shifts adapted ([`metaids_model::adapt`]), each channel's
    /// scale changed by at most this factor.
    LayerNorm(f32),
    /// (b) then (c) on the refit inputs.
    Both(f32),
}

impl SiteAdaptation {
    /// Parses `--adapt` (`None` for `none`); `ln_max_ratio` bounds a LayerNorm adaptation.
    pub(crate) fn parse(s: &str, ln_max_ratio: f32) -> Result<Option<Self>> {
        Ok(match s {
            "none" => None,
            "normaliser" => Some(Self::Normaliser),
            "layernorm" => Some(Self::LayerNorm(ln_max_ratio)),
            "both" => Some(Self::Both(ln_max_ratio)),
            other => bail!("--adapt must be none, normaliser, layernorm or both, got {other:?}"),
        })
    }

    /// The name the reports use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Normaliser => "normaliser refit",
            Self::LayerNorm(_) => "LayerNorm adaptation",
            Self::Both(_) => "normaliser refit + LayerNorm adaptation",
        }
    }
}

/// Every flow re-embedded after adapting the model to the baseline window `base` (flow indices):
/// the normaliser's numeric columns refit on the window and/or the LayerNorms adapted to it.
pub(crate) fn adapted_embeddings(
    model: &metaids_model::ThreatModel,
    captured: &Captured,
    base: &[usize],
    how: SiteAdaptation,
) -> Result<Vec<f32>> {
    let normaliser = match how {
        SiteAdaptation::Normaliser | SiteAdaptation::Both(_) => {
            model.normaliser.refit_numeric(base.iter().map(|&flow| {
                let (f, r) = captured.index[flow];
                captured.frames[f].0.numeric_row(r)
            }))
        }
        SiteAdaptation::LayerNorm(_) => model.normaliser.clone(),
    };
    // Every capture preprocessed once: the window's rows for the LayerNorm moments, all of them
    // for the embeddings.
    let inputs = captured
        .frames
        .iter()
        .map(|(frame, rows)| normaliser.transform(frame, rows))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let kernel = match how {
        SiteAdaptation::Normaliser => metaids_model::ScoringKernel::for_model(model)?,
        SiteAdaptation::LayerNorm(bound) | SiteAdaptation::Both(bound) => {
            let stats = model.norm_statistics.as_ref().with_context(|| {
                "the model records no LayerNorm statistics (trained before they were kept, or \
                 without LayerNorm): train it again to adapt its LayerNorms"
            })?;
            let d = normaliser.output_dim();
            // `captured.index[flow]` is (frame, row); the row's position within its frame's rows
            // is its offset from the frame's first flow.
            let mut first = Vec::with_capacity(captured.frames.len());
            let mut at = 0;
            for (_, rows) in &captured.frames {
                first.push(at);
                at += rows.len();
            }
            let mut site_x = Vec::with_capacity(base.len() * d);
            for &flow in base {
                let (f, _) = captured.index[flow];
                let k = flow - first[f];
                site_x.extend_from_slice(&inputs[f][k * d..(k + 1) * d]);
            }
            let (encoder, report) =
                metaids_model::adapt_layer_norms(&model.encoder, stats, &site_x, bound)?;
            eprintln!(
                "LayerNorm adaptation on {} baseline flows: mean channel shift {:?}, {} channels at the scale bound {bound} (largest |log ratio| {:.2})",
                report.rows,
                report
                    .mean_shift
                    .iter()
                    .map(|v| format!("{v:.3}"))
                    .collect::<Vec<_>>(),
                report.clamped,
                report.max_log_ratio
            );
            metaids_model::ScoringKernel::from_encoder(&encoder)?
                .with_dense_inputs(model.normaliser.numeric.len())
        }
    };
    let mut out = Vec::with_capacity(captured.index.len() * model.dim());
    for x in &inputs {
        out.extend(kernel.embed(x)?);
    }
    Ok(out)
}

/// Runs the command.
pub fn run(a: SiteEvalArgs) -> Result<()> {
    let started = Instant::now();
    let model = metaids_model::load(&a.model)
        .with_context(|| format!("cannot load model {}", a.model.display()))?;
    let config = crate::extract::flow_config(&a.flow)?;
    let (mut flows, captures, captured) = embed_captures(&a.captures, &model, config)?;
    if a.site_context {
        append_source_context(&mut flows, &captured)?;
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &flows.labels {
        *counts.entry(l).or_default() += 1;
    }
    eprintln!(
        "{} flows from {} captures: {}",
        flows.labels.len(),
        captures.len(),
        counts
            .iter()
            .map(|(l, n)| format!("{l} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let cfg = SiteConfig {
        budgets: a.budgets.clone(),
        shots: a.shots,
        repeats: a.repeats,
        seed: a.seed,
        baseline_share: a.baseline_share,
        baseline_max: a.baseline_max,
        profile: ProfileOptions {
            per_source_cap: a.per_source_cap,
            confidence: a.confidence,
            in_sample: a.in_sample_rank,
            prototype_share: a.prototype_share,
            ..ProfileOptions::default()
        },
        force: a.force,
        site_forest: a.site_forest || a.site_context,
        source_context: a.site_context,
        timing_shift: if a.no_timing_jitter {
            Vec::new()
        } else {
            metaids_library::timing_shift(&model.normaliser)
        },
        keep_verdicts: a.verdicts_csv.is_some(),
    };
    let how = SiteAdaptation::parse(&a.adapt, a.ln_max_ratio)?;
    let refit = |base: &[usize]| -> std::result::Result<Vec<f32>, metaids_eval::EvalError> {
        let how = how.unwrap_or(SiteAdaptation::Normaliser);
        adapted_embeddings(&model, &captured, base, how).map_err(|e| {
            metaids_eval::EvalError::Method {
                method: how.name().into(),
                message: format!("{e:#}"),
            }
        })
    };
    let adapt: Option<(&str, metaids_eval::site::Adaptation<'_>)> =
        how.map(|h| (h.name(), &refit as metaids_eval::site::Adaptation<'_>));
    let result = metaids_eval::site::run(&flows, &cfg, Some(&model.reference), adapt)?;
    print!("{}", result.markdown());
    eprintln!("{:.1} s", started.elapsed().as_secs_f64());
    if let Some(path) = &a.json {
        let mut v = result.to_json();
        v["model"] = serde_json::json!(a.model.display().to_string());
        v["captures"] = serde_json::json!(captures
            .iter()
            .map(|(p, l)| serde_json::json!({"file": p.display().to_string(), "label": l}))
            .collect::<Vec<_>>());
        let text = serde_json::to_string_pretty(&v).context("serialising the results")?;
        write_atomic(path, text.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &a.verdicts_csv {
        let csv = verdicts_csv(&result, &flows, &captured).context("writing the verdicts CSV")?;
        write_atomic(path, &csv)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The columns that say where each flow came from in `--verdicts-csv`.
const WHERE: [&str; 7] = [
    "capture",
    "capture_flow",
    "src_ip",
    "src_port",
    "dest_ip",
    "dest_port",
    "start",
];

/// Every kept verdict of `result` as CSV, each flow located by its capture file, its position
/// among that capture's flows and its identifiers.
fn verdicts_csv(result: &SiteResult, flows: &SiteFlows, captured: &Captured) -> Result<Vec<u8>> {
    // The flow facts detect's verdicts carry, read as detect reads them (columns found once per frame).
    let columns: Vec<metaids_detect::FrameColumns> = captured
        .frames
        .iter()
        .map(|(frame, _)| metaids_detect::FrameColumns::new(frame))
        .collect();
    let describe = |flow: usize| -> Vec<String> {
        let Some(&(f, r)) = captured.index.get(flow) else {
            return vec![String::new(); WHERE.len()];
        };
        let m = metaids_detect::FlowMeta::from_frame(0, &captured.frames[f].0, r, &columns[f]);
        vec![
            captured.files[f].display().to_string(),
            captured.positions[flow].to_string(),
            metaids_detect::ip_text(m.src_ip),
            m.src_port.to_string(),
            metaids_detect::ip_text(m.dest_ip),
            m.dest_port.to_string(),
            m.start_us
                .map_or_else(String::new, metaids_detect::eve_timestamp),
        ]
    };
    Ok(result.verdicts_csv(&flows.labels, &WHERE, &describe)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_a_markdown_table_or_file_names() {
        let dir = tempfile::tempdir().expect("tmp");
        for f in [
            "benign-web.pcap",
            "nmap-syn.pcap.gz",
            "notes.txt",
            "Benign_dns.pcapng",
        ] {
            std::fs::write(dir.path().join(f), b"x").expect("write");
        }
        let got = labelled_captures(dir.path()).expect("names");
        let labels: Vec<&str> = got.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, vec![BENIGN, BENIGN, "nmap-syn"]);
        std::fs::write(
            dir.path().join("LABELS.md"),
            "# Lab\n\n| file | label | what |\n|---|---|---|\n| `benign-web.pcap` | BENIGN | web |\n| nmap-syn.pcap.gz | portscan | nmap -sS |\n",
        )
        .expect("write");
        let got = labelled_captures(dir.path()).expect("table");
        let labels: Vec<&str> = got.iter().map(|(_, l)| l.as_str()).collect();
        // Benign_dns.pcapng is not in the table: skipped.
        assert_eq!(labels, vec![BENIGN, "portscan"]);
        std::fs::write(
            dir.path().join("LABELS.md"),
            "| file | label |\n|---|---|\n| gone.pcap | x |\n",
        )
        .expect("write");
        let e = labelled_captures(dir.path()).expect_err("missing file");
        assert!(e.to_string().contains("gone.pcap"), "{e}");
        std::fs::write(
            dir.path().join("LABELS.md"),
            "| file | label |\n|---|---|\n| a.pcap |  |\n",
        )
        .expect("write");
        let e = labelled_captures(dir.path()).expect_err("empty label");
        assert!(e.to_string().contains("line 3"), "{e}");
    }
}
