//! Evaluation reports as one self-contained HTML file (`metaids report`): inline SVG charts drawn with
//! plotters (K-shot curves with their 95% CI bands, ROC and precision-recall curves per novel family,
//! a 2-D map of the model's embedding), the N-way confusion matrix, the operating-point, per-family
//! and paired-difference tables, and the protocol block with every hash. No script, no
//! external file: it opens anywhere and can be attached to a paper review.
//!
//! Charts measure their labels with DejaVu Sans, compiled in (`assets/`, licence beside it); the SVG
//! text itself asks the browser for `sans-serif`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use metaids_core::metrics::Summary;
use plotters::prelude::*;

use crate::map::EmbeddingMap;
use crate::protocol::{MethodResult, RocPoint, ROC_FPRS};
use crate::report::Report;

/// What can go wrong while drawing.
#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    /// plotters refused a chart.
    #[error("drawing the chart {chart:?}: {message}")]
    Chart {
        /// The chart's title.
        chart: String,
        /// plotters' message.
        message: String,
    },
}

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers the compiled-in font once (plotters keeps fonts in a global table).
fn font_ready() -> Result<(), HtmlError> {
    static READY: OnceLock<bool> = OnceLock::new();
    let ok = *READY.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(HtmlError::Chart {
            chart: "font".into(),
            message: "the compiled-in DejaVu Sans did not load".into(),
        })
    }
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A method's name with its role: the headline model row, an ablation, or a baseline.
fn label(r: &MethodResult) -> String {
    match (r.model_row, r.headline) {
        (true, true) => format!("{} (headline)", r.method),
        (true, false) => format!("{} (ablation)", r.method),
        _ => r.method.clone(),
    }
}

fn chart_error(chart: &str) -> impl Fn(String) -> HtmlError + '_ {
    move |message| HtmlError::Chart {
        chart: chart.to_string(),
        message,
    }
}

/// One line per method: (label, points (x, mean, ci95)).
type Series = Vec<(String, Vec<(f64, f64, f64)>)>;

/// A line chart of `series` with a shaded 95% CI band around each line; `log_x` for a logarithmic
/// x axis (the ROC curves' false-positive rates).
fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x_range: (f64, f64),
    log_x: bool,
    series: &Series,
    legend: SeriesLabelPosition,
) -> Result<String, HtmlError> {
    font_ready()?;
    // The y axis starts at the lowest band edge rounded down to 0.05, so differences near 1 show.
    let low = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y, c)| y - c))
        .fold(1.0f64, f64::min);
    let y_lo = ((low.max(0.0) * 20.0).floor() / 20.0).min(0.9);
    let err = chart_error(title);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (520, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48);
        let (lo, hi) = x_range;
        if log_x {
            let chart = builder
                .build_cartesian_2d((lo..hi).log_scale(), y_lo..1.005f64)
                .map_err(|e| err(e.to_string()))?;
            draw_lines(chart, x_desc, y_desc, series, legend).map_err(&err)?;
        } else {
            let chart = builder
                .build_cartesian_2d(lo..hi, y_lo..1.005f64)
                .map_err(|e| err(e.to_string()))?;
            draw_lines(chart, x_desc, y_desc, series, legend).map_err(&err)?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// The mesh, each series' band and line, and the legend, on a chart with any x scale.
fn draw_lines<'a, X>(
    mut chart: ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
    >,
    x_desc: &str,
    y_desc: &str,
    series: &Series,
    legend: SeriesLabelPosition,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(std::iter::once(Polygon::new(band(points), color.mix(0.15))))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(x, y, _)| (x, y)),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// The CI band of a line as a closed polygon: mean + ci left to right, mean − ci back, within [0, 1].
fn band(points: &[(f64, f64, f64)]) -> Vec<(f64, f64)> {
    let upper = points.iter().map(|&(x, y, c)| (x, (y + c).min(1.0)));
    let lower = points.iter().rev().map(|&(x, y, c)| (x, (y - c).max(0.0)));
    upper.chain(lower).collect()
}

/// Methods in report order, each with its rows sorted by K.
fn by_method(report: &Report) -> Vec<(&str, Vec<&MethodResult>)> {
    let mut order: Vec<&str> = Vec::new();
    let mut rows: BTreeMap<&str, Vec<&MethodResult>> = BTreeMap::new();
    for r in &report.results {
        if !rows.contains_key(r.method.as_str()) {
            order.push(&r.method);
        }
        rows.entry(&r.method).or_default().push(r);
    }
    order
        .into_iter()
        .map(|m| {
            let mut v = rows.remove(m).unwrap_or_default();
            v.sort_by_key(|r| r.shots);
            (m, v)
        })
        .collect()
}

/// A K-shot chart of one metric (`get`: the metric of a row, if it has it).
fn kshot_chart(
    report: &Report,
    title: &str,
    get: impl Fn(&MethodResult) -> Option<Summary>,
) -> Result<String, HtmlError> {
    let shots = &report.protocol.config.shots;
    let max_k = shots.iter().copied().max().unwrap_or(1) as f64;
    let series: Series = by_method(report)
        .into_iter()
        .filter_map(|(_, rows)| {
            let points: Vec<(f64, f64, f64)> = rows
                .iter()
                .filter_map(|r| get(r).map(|s| (r.shots as f64, s.mean, s.ci95)))
                .collect();
            (!points.is_empty()).then(|| (label(rows[0]), points))
        })
        .collect();
    line_chart(
        title,
        "K (shots)",
        title,
        (0.5, max_k + 0.5),
        false,
        &series,
        SeriesLabelPosition::LowerRight,
    )
}

/// The K the per-family figures are shown at: 5 when evaluated, else the middle one.
fn family_k(report: &Report) -> usize {
    let shots = &report.protocol.config.shots;
    if shots.contains(&5) {
        5
    } else {
        shots.get(shots.len() / 2).copied().unwrap_or(1)
    }
}

/// One family's ROC curves: (row label, its points) per method.
type FamilyRocs<'a> = (&'a str, Vec<(String, &'a [RocPoint])>);

/// The novel families of the rows at `k`, in report order, each with every row's ROC points.
fn family_rocs(report: &Report, k: usize) -> Vec<FamilyRocs<'_>> {
    let rows: Vec<&MethodResult> = report.results.iter().filter(|r| r.shots == k).collect();
    let mut families: Vec<&str> = Vec::new();
    for r in &rows {
        for f in &r.per_family {
            if !families.contains(&f.family.as_str()) {
                families.push(&f.family);
            }
        }
    }
    families
        .into_iter()
        .map(|family| {
            let curves = rows
                .iter()
                .filter_map(|r| {
                    let f = r.per_family.iter().find(|f| f.family == family)?;
                    let roc = &f.operating.as_ref()?.roc;
                    (!roc.is_empty()).then(|| (label(r), roc.as_slice()))
                })
                .collect();
            (family, curves)
        })
        .collect()
}

/// ROC charts, one per novel family at `k`, one line per method.
fn roc_charts(report: &Report, k: usize) -> Result<Vec<String>, HtmlError> {
    let (lo, hi) = (ROC_FPRS[0], ROC_FPRS[ROC_FPRS.len() - 1]);
    family_rocs(report, k)
        .into_iter()
        .map(|(family, curves)| {
            let series: Series = curves
                .into_iter()
                .map(|(name, roc)| {
                    let points = roc
                        .iter()
                        .map(|p| (p.fpr, p.recall.mean, p.recall.ci95))
                        .collect();
                    (name, points)
                })
                .collect();
            line_chart(
                &format!("{family} — ROC at K={k}"),
                "false-positive rate on the benign pool (log)",
                "recall",
                (lo, hi),
                true,
                &series,
                SeriesLabelPosition::LowerRight,
            )
        })
        .collect()
}

/// The base rate the PR curves are drawn at (1 attack per 100 flows).
const PR_BASE_RATE: f64 = 0.01;

/// Precision-recall charts, one per novel family at `k`, derived from the ROC points at the base
/// rate [`PR_BASE_RATE`]: precision = π·recall / (π·recall + (1 − π)·FPR).
fn pr_charts(report: &Report, k: usize) -> Result<Vec<String>, HtmlError> {
    let pi = PR_BASE_RATE;
    family_rocs(report, k)
        .into_iter()
        .map(|(family, curves)| {
            let series: Series = curves
                .into_iter()
                .filter_map(|(name, roc)| {
                    let mut points: Vec<(f64, f64, f64)> = roc
                        .iter()
                        .filter(|p| p.recall.mean > 0.0)
                        .map(|p| {
                            let tp = pi * p.recall.mean;
                            (p.recall.mean, tp / (tp + (1.0 - pi) * p.fpr), 0.0)
                        })
                        .collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    (!points.is_empty()).then_some((name, points))
                })
                .collect();
            line_chart(
                &format!("{family} — PR at 1:100, K={k}"),
                "recall",
                "precision at 1 attack per 100 flows",
                (0.0, 1.0),
                false,
                &series,
                // The curves sit at high recall: the legend goes left.
                SeriesLabelPosition::LowerLeft,
            )
        })
        .collect()
}

/// One legend entry of the map: its name, colour and points.
type MapGroup = (String, RGBColor, Vec<(f64, f64)>);

/// The embedding map as a scatter chart: benign rows grey, seen families light blue, each novel
/// family its own colour.
fn map_chart(map: &EmbeddingMap) -> Result<String, HtmlError> {
    font_ready()?;
    let title = format!("Embedding of {} (PCA)", map.method);
    let err = chart_error(&title);
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in &map.points {
        x0 = x0.min(p.x);
        x1 = x1.max(p.x);
        y0 = y0.min(p.y);
        y1 = y1.max(p.y);
    }
    if x0 > x1 || y0 > y1 {
        return Ok(String::new());
    }
    let pad = |lo: f32, hi: f32| {
        let m = ((hi - lo) * 0.05).max(1e-3);
        (f64::from(lo - m), f64::from(hi + m))
    };
    let (x0, x1) = pad(x0, x1);
    let (y0, y1) = pad(y0, y1);
    let mut novel: Vec<&str> = Vec::new();
    for p in map.points.iter().filter(|p| p.role == "novel") {
        if !novel.contains(&p.family.as_str()) {
            novel.push(&p.family);
        }
    }
    let mut groups: Vec<MapGroup> = vec![
        (
            "benign (training)".into(),
            RGBColor(170, 170, 170),
            Vec::new(),
        ),
        (
            "benign (query pool)".into(),
            RGBColor(90, 90, 90),
            Vec::new(),
        ),
        ("seen families".into(), RGBColor(158, 202, 225), Vec::new()),
    ];
    for (i, f) in novel.iter().enumerate() {
        groups.push((
            format!("novel: {f}"),
            PALETTE[(i + 1) % PALETTE.len()],
            Vec::new(),
        ));
    }
    for p in &map.points {
        let g = match p.role.as_str() {
            "benign-train" => 0,
            "benign-pool" => 1,
            "seen" => 2,
            _ => 3 + novel.iter().position(|f| *f == p.family).unwrap_or(0),
        };
        if let Some(group) = groups.get_mut(g) {
            group.2.push((f64::from(p.x), f64::from(p.y)));
        }
    }
    let legend_entries: Vec<MapGroup> = groups
        .iter()
        .filter(|g| !g.2.is_empty())
        .map(|(n, c, _)| (n.clone(), *c, Vec::new()))
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(format!(
                "PC 1 ({:.0}% of variance)",
                map.explained_variance[0] * 100.0
            ))
            .y_desc(format!(
                "PC 2 ({:.0}% of variance)",
                map.explained_variance[1] * 100.0
            ))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (_, color, points) in groups.into_iter().filter(|g| !g.2.is_empty()) {
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(move |p| Circle::new(p, 2, color.mix(0.7).filled())),
                )
                .map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    // The legend in HTML beside the chart, so it never covers points.
    let mut legend = String::from("<ul class=\"legend\">");
    for (name, RGBColor(r, g, b), _) in &legend_entries {
        let _ = write!(
            legend,
            "<li><span style=\"background:rgb({r},{g},{b})\"></span>{}</li>",
            escape(name)
        );
    }
    legend.push_str("</ul>");
    Ok(format!("<div class=\"map\">{svg}{legend}</div>"))
}

/// The N-way confusion matrix of the headline row (else the first model row, else the first row
/// that classifies) at `k`, as a table shaded by each true family's share.
fn confusion_table(out: &mut String, report: &Report, k: usize) {
    let rows: Vec<&MethodResult> = report
        .results
        .iter()
        .filter(|r| r.shots == k && r.confusion.is_some())
        .collect();
    let Some(row) = rows
        .iter()
        .find(|r| r.headline)
        .or_else(|| rows.iter().find(|r| r.model_row))
        .or_else(|| rows.first())
    else {
        return;
    };
    let Some(c) = &row.confusion else { return };
    let _ = write!(
        out,
        "<h3>N-way confusion matrix — {} at K={k}</h3><p>{} queries of {}-way episodes among the novel families; row: the true family, column: the predicted one; shading: the row's share.</p><table><tr><th>true \\ predicted</th>",
        escape(&label(row)),
        c.total(),
        row.ways
    );
    for f in &c.families {
        let _ = write!(out, "<th>{}</th>", escape(f));
    }
    out.push_str("</tr>");
    for (f, counts) in c.families.iter().zip(&c.counts) {
        let total = counts.iter().sum::<u64>().max(1) as f64;
        let _ = write!(out, "<tr><th>{}</th>", escape(f));
        for &n in counts {
            let share = n as f64 / total;
            let _ = write!(
                out,
                "<td style=\"background:rgba(31,119,180,{share:.2})\">{n} <small>({:.0}%)</small></td>",
                share * 100.0
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

fn cell(s: Option<&Summary>) -> String {
    s.map_or("—".into(), |s| format!("{:.3} ± {:.3}", s.mean, s.ci95))
}

fn protocol_block(out: &mut String, source: &str, report: &Report) {
    let p = &report.protocol;
    let _ = write!(
        out,
        "<table class=\"kv\"><tr><th>report</th><td>{}</td></tr><tr><th>dataset</th><td>{}</td></tr>\
         <tr><th>split file</th><td>{} <code>{}</code></td></tr><tr><th>episode seed</th><td>{}</td></tr>\
         <tr><th>episodes per family and K</th><td>{}</td></tr><tr><th>K</th><td>{:?}</td></tr>\
         <tr><th>training seeds</th><td>{}</td></tr><tr><th>benign rows</th><td>{} training, {} query pool</td></tr>\
         <tr><th>metaids</th><td>{}</td></tr></table>",
        escape(source),
        escape(&p.dataset),
        escape(&p.split_file),
        escape(&p.split_sha256),
        p.seed,
        p.episodes,
        p.config.shots,
        if p.train_seeds.is_empty() {
            "one model (or none)".to_string()
        } else {
            format!("{:?}", p.train_seeds)
        },
        p.benign_train_rows,
        p.benign_query_rows,
        escape(&report.metaids_version),
    );
    out.push_str("<h4>Data files</h4><table><tr><th>file</th><th>rows</th><th>sha256</th></tr>");
    for f in &p.files {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&f.path),
            f.rows,
            escape(&f.sha256)
        );
    }
    out.push_str("</table><h4>Duplicates</h4><table><tr><th>role</th><th>rows</th><th>repeated</th><th>other-label twins</th><th>twins in training</th></tr>");
    for d in &p.duplicates {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&d.role),
            d.rows,
            d.repeated,
            d.conflicting,
            d.twins_in_training
        );
    }
    out.push_str("</table>");
    if p.config.keep_twins {
        out.push_str("<p>Queries with an exact twin in the training or support rows were kept (<code>--keep-twins</code>).</p>");
    } else {
        let removed: Vec<String> = p
            .twins_removed
            .iter()
            .filter(|t| t.removed > 0)
            .map(|t| {
                format!(
                    "{} {} of {}",
                    escape(&t.role),
                    t.removed,
                    t.removed + t.left
                )
            })
            .collect();
        let _ = write!(
            out,
            "<p>Removed as queries for an exact twin in the training rows: {}; attack queries dropped for repeating a support row: {}.</p>",
            if removed.is_empty() { "none".into() } else { removed.join(", ") },
            p.support_twins_removed
        );
    }
    if !p.novel_siblings.is_empty() {
        let items: Vec<String> = p
            .novel_siblings
            .iter()
            .map(|n| format!("{} ({})", escape(&n.family), escape(&n.siblings.join(", "))))
            .collect();
        let _ = write!(
            out,
            "<p>Novel families with a sibling in training: {}.</p>",
            items.join("; ")
        );
    }
}

fn tables(out: &mut String, report: &Report, k: usize) {
    out.push_str("<h3>Operating points (macro over families)</h3><table><tr><th>method</th><th>K</th><th>macro-F1</th><th>PR-AUC</th><th>recall @ FPR 0.001 (oracle)</th><th>recall @ FPR 0.001 (own calibration)</th><th>own FPR on the pool</th><th>precision @ 1:1000</th><th>F1 @ 1:1000</th></tr>");
    let mut rows: Vec<&MethodResult> = report.results.iter().collect();
    rows.sort_by_key(|r| r.shots);
    for r in rows {
        let o = r.operating.as_ref();
        let _ = write!(
            out,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if r.headline { " class=\"headline\"" } else { "" },
            escape(&label(r)),
            r.shots,
            cell(Some(&r.macro_f1)),
            cell(o.map(|o| &o.pr_auc)),
            cell(o.and_then(|o| o.recall_at_fpr_oracle.get("0.001"))),
            cell(o.and_then(|o| o.recall_at_fpr.as_ref()).and_then(|m| m.get("0.001"))),
            o.map_or("—".into(), |o| format!("{:.4} ± {:.4}", o.pool_fpr.mean, o.pool_fpr.ci95)),
            cell(o.and_then(|o| o.precision_at_base_rate.get("0.001"))),
            cell(o.and_then(|o| o.f1_at_base_rate.get("0.001"))),
        );
    }
    out.push_str("</table>");
    let at_k: Vec<&MethodResult> = report.results.iter().filter(|r| r.shots == k).collect();
    let _ = write!(
        out,
        "<h3>Per family at K={k}: F1 / PR-AUC (mean over episodes)</h3><table><tr><th>family</th>"
    );
    for r in &at_k {
        let _ = write!(out, "<th>{}</th>", escape(&label(r)));
    }
    out.push_str("</tr>");
    let families: Vec<&str> = at_k
        .first()
        .map(|r| r.per_family.iter().map(|f| f.family.as_str()).collect())
        .unwrap_or_default();
    for family in families {
        let _ = write!(out, "<tr><td>{}</td>", escape(family));
        for r in &at_k {
            let f = r.per_family.iter().find(|f| f.family == family);
            let _ = write!(
                out,
                "<td>{}</td>",
                f.map_or("—".into(), |f| format!(
                    "{:.3} / {}",
                    f.f1.mean,
                    f.operating
                        .as_ref()
                        .map_or("—".into(), |o| format!("{:.3}", o.pr_auc.mean))
                ))
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    if !report.paired.is_empty() {
        out.push_str("<h3>Paired differences: model row − best baseline (same episodes)</h3><table><tr><th>model row</th><th>K</th><th>metric</th><th>best baseline</th><th>difference (mean ± 95% CI)</th></tr>");
        for d in &report.paired {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:+.3} ± {:.3}</td></tr>",
                escape(&d.method),
                d.shots,
                escape(&d.metric),
                escape(&d.baseline),
                d.difference.mean,
                d.difference.ci95
            );
        }
        out.push_str("</table>");
    }
}

/// The HTML page for `reports` (each with the name it was read from).
pub fn render(reports: &[(String, Report)]) -> Result<String, HtmlError> {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>metaids evaluation report</title>\
         <style>body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}\
         table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px;text-align:left}\
         th{background:#f0f0f0}tr.headline td{font-weight:bold}code{font-size:12px}.charts svg{margin:4px;border:1px solid #ddd}\
         .kv th{width:14em}.map{display:flex;align-items:flex-start}.legend{list-style:none;font-size:13px}\
         .legend span{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:6px}</style></head><body><h1>metaids evaluation report</h1>\
         <p>Novel-family few-shot protocol: every figure is a mean ± 95% CI over episodes (and training seeds \
         where listed), on attack families no model or baseline saw in training or selection. \
         Definitions of every metric are in each report's protocol (<code>metric_definition</code>).</p>",
    );
    for (source, report) in reports {
        let k = family_k(report);
        let _ = write!(
            out,
            "<section><h2>{} — {}</h2>",
            escape(&report.protocol.dataset),
            escape(&report.protocol.split_file)
        );
        protocol_block(&mut out, source, report);
        out.push_str("<h3>K-shot curves</h3><div class=\"charts\">");
        out.push_str(&kshot_chart(report, "macro-F1", |r| Some(r.macro_f1))?);
        out.push_str(&kshot_chart(report, "PR-AUC", |r| {
            r.operating.as_ref().map(|o| o.pr_auc)
        })?);
        out.push_str(&kshot_chart(report, "recall @ FPR 0.001 (oracle)", |r| {
            r.operating
                .as_ref()
                .and_then(|o| o.recall_at_fpr_oracle.get("0.001").copied())
        })?);
        let _ = write!(
            out,
            "</div><h3>ROC per novel family at K={k}</h3><p>Recall at each false-positive rate on the benign query pool, the threshold read off each task's pool and the recall averaged over tasks (vertical averaging). Precision at a base rate π follows from any point: π·recall / (π·recall + (1 − π)·FPR).</p><div class=\"charts\">"
        );
        for svg in roc_charts(report, k)? {
            out.push_str(&svg);
        }
        let _ = write!(
            out,
            "</div><h3>Precision-recall per novel family at K={k}</h3><p>The ROC points above at a base rate of 1 attack per 100 flows (precision from recall and FPR, not from the 1:1 task queries).</p><div class=\"charts\">"
        );
        for svg in pr_charts(report, k)? {
            out.push_str(&svg);
        }
        out.push_str("</div>");
        if let Some(map) = &report.embedding_map {
            let _ = write!(
                out,
                "<h3>Embedding map</h3><p>{}.</p><div class=\"charts\">",
                escape(&map.projection)
            );
            out.push_str(&map_chart(map)?);
            out.push_str("</div>");
        }
        confusion_table(&mut out, report, k);
        tables(&mut out, report, k);
        out.push_str("</section>");
    }
    out.push_str("</body></html>\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn charts_are_svg_with_lines_and_ci_bands() {
        let series: Series = vec![
            ("a".into(), vec![(1.0, 0.5, 0.1), (5.0, 0.8, 0.05)]),
            ("c".into(), vec![(1.0, 0.9, 0.0), (5.0, 0.95, 0.01)]),
        ];
        for (log_x, range) in [(false, (0.5, 5.5)), (true, (0.0005, 0.5))] {
            let svg = line_chart(
                "t",
                "x",
                "y",
                range,
                log_x,
                &series,
                SeriesLabelPosition::LowerRight,
            )
            .expect("chart");
            assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
            assert_eq!(svg.matches("<polygon").count(), 2, "one CI band per line");
            assert!(svg.matches("<polyline").count() >= 2, "one line per series");
        }
        assert_eq!(band(&[(1.0, 0.95, 0.1)]), vec![(1.0, 1.0), (1.0, 0.85)]);
    }
}
