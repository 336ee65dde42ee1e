//! Model files: a directory holding `weights.safetensors` (encoder parameters and benign calibration
//! embeddings) and `manifest.json` (versions, dataset, feature-schema hash, normaliser, configs,
//! provenance, prototypes, thresholds, validation history, weights hash), written atomically.
//!
//! Loading checks everything and refuses a mismatch with an error naming the file and the field. This
//! module does not check the model against data: [`ThreatModel::check_layout`] does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use metaids_core::preprocess::Normaliser;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::adapt::NormStatistics;
use crate::encoder::{Encoder, EncoderConfig};
use crate::error::{ModelError, Result};
use crate::finetune::{FinetuneConfig, Finetuner};
use crate::model::{ThreatModel, TrainingRecord};
use metaids_decide::BenignReference;

/// Model file format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Weights file name inside a model directory.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// Manifest file name inside a model directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Tensor holding the benign calibration embeddings.
pub const CALIBRATION_TENSOR: &str = "calibration.benign";

/// Prefix of the fine-tuning initialisation's parameters in the weights file.
pub const FINETUNE_PREFIX: &str = "finetune.init.";
/// Tensor holding the preprocessed benign rows of enrolment fine-tuning.
pub const FINETUNE_BENIGN_TENSOR: &str = "finetune.benign";
/// Tensor holding the preprocessed calibration rows of enrolment fine-tuning.
pub const FINETUNE_CALIBRATION_TENSOR: &str = "finetune.calibration";

/// Enrolment fine-tuning facts recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneInfo {
    /// Settings.
    pub config: FinetuneConfig,
    /// Stored preprocessed benign rows.
    pub benign_rows: usize,
    /// Stored preprocessed calibration rows.
    pub calibration_rows: usize,
    /// False-positive budget of the adapted thresholds.
    pub fpr_budget: f64,
    /// Seed of the benign clustering.
    pub seed: u64,
}

/// Calibration facts recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationInfo {
    /// False-positive budget α.
    pub fpr_budget: f64,
    /// Unknown-anomaly threshold (squared distance).
    pub unknown_threshold: f32,
    /// Held-out benign calibration rows.
    pub rows: usize,
}

/// One known attack-family prototype.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownPrototype {
    /// The attack family.
    pub family: String,
    /// Centre in embedding space.
    pub centre: Vec<f32>,
}

/// One tensor of the weights file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorEntry {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// The weights file as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsInfo {
    /// File name inside the model directory.
    pub file: String,
    /// Sha256 of its bytes.
    pub sha256: String,
    /// Its tensors (all f32).
    pub tensors: Vec<TensorEntry>,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must equal [`FORMAT_VERSION`].
    pub format_version: u32,
    /// metaids version that wrote it.
    pub metaids_version: String,
    /// Dataset kind (`nsl-kdd`, `cic`, `unsw-nb15`).
    pub dataset: String,
    /// Feature-schema hash of the training data.
    pub schema_hash: String,
    /// The normaliser, as its own JSON.
    pub normaliser: serde_json::Value,
    /// Encoder shape.
    pub encoder: EncoderConfig,
    /// Training configuration, seed, history and provenance.
    pub training: TrainingRecord,
    /// Benign prototypes (k-means centres in embedding space).
    pub benign_prototypes: Vec<Vec<f32>>,
    /// Known attack-family prototypes of the known-family rule (empty: none).
    #[serde(default)]
    pub known_prototypes: Vec<KnownPrototype>,
    /// Budget share σ of the separate known-prototype rule (0: one combined score).
    #[serde(default)]
    pub known_share: f64,
    /// Calibration.
    pub calibration: CalibrationInfo,
    /// Enrolment fine-tuning (absent: none stored).
    #[serde(default)]
    pub finetune: Option<FinetuneInfo>,
    /// The LayerNorms' channel moments over training benign rows (absent: a model written before
    /// they were recorded; it cannot adapt its LayerNorms to a site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm_statistics: Option<NormStatistics>,
    /// The weights file.
    pub weights: WeightsInfo,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The two files of `model`'s directory, as bytes: `weights.safetensors` and `manifest.json`
/// (deterministic: the same model always encodes to the same bytes). `path` only names errors.
fn encode(model: &ThreatModel, path: &Path) -> Result<(Vec<u8>, String, Manifest)> {
    let dim = model.dim();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = model
        .encoder
        .export()?
        .into_iter()
        .map(|(n, s, v)| (n, s, to_bytes(&v)))
        .collect();
    tensors.push((
        CALIBRATION_TENSOR.to_string(),
        vec![model.reference.calibration_rows(), dim],
        to_bytes(&model.reference.calibration),
    ));
    if let Some(ft) = &model.finetune {
        let input = ft.init.config().input_dim;
        for (n, s, v) in ft.init.export()? {
            tensors.push((format!("{FINETUNE_PREFIX}{n}"), s, to_bytes(&v)));
        }
        tensors.push((
            FINETUNE_BENIGN_TENSOR.to_string(),
            vec![ft.benign_rows(), input],
            to_bytes(&ft.benign_x),
        ));
        tensors.push((
            FINETUNE_CALIBRATION_TENSOR.to_string(),
            vec![ft.calibration_rows(), input],
            to_bytes(&ft.calibration_x),
        ));
    }
    let fmt_err = |field: &str, message: String| ModelError::Format {
        path: path.to_path_buf(),
        field: field.to_string(),
        message,
    };
    let views = tensors
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| fmt_err(n, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let weights = safetensors::tensor::serialize(views, None)
        .map_err(|e| fmt_err("weights", e.to_string()))?;
    let normaliser: serde_json::Value = serde_json::from_str(&model.normaliser.to_json())
        .map_err(|e| fmt_err("normaliser", e.to_string()))?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        metaids_version: env!("CARGO_PKG_VERSION").to_string(),
        dataset: model.normaliser.kind.name().to_string(),
        schema_hash: model.normaliser.schema_hash.clone(),
        normaliser,
        encoder: model.encoder.config().clone(),
        training: model.record.clone(),
        benign_prototypes: model
            .reference
            .prototypes
            .chunks_exact(dim)
            .map(<[f32]>::to_vec)
            .collect(),
        known_prototypes: model
            .reference
            .known_families
            .iter()
            .zip(model.reference.known.chunks_exact(dim))
            .map(|(f, c)| KnownPrototype {
                family: f.clone(),
                centre: c.to_vec(),
            })
            .collect(),
        known_share: model.reference.known_share,
        calibration: CalibrationInfo {
            fpr_budget: model.reference.fpr_budget,
            unknown_threshold: model.reference.unknown_threshold,
            rows: model.reference.calibration_rows(),
        },
        finetune: model.finetune.as_ref().map(|ft| FinetuneInfo {
            config: ft.config.clone(),
            benign_rows: ft.benign_rows(),
            calibration_rows: ft.calibration_rows(),
            fpr_budget: ft.fpr_budget,
            seed: ft.seed(),
        }),
        norm_statistics: model.norm_statistics.clone(),
        weights: WeightsInfo {
            file: WEIGHTS_FILE.to_string(),
            sha256: hex(&Sha256::digest(&weights)),
            tensors: tensors
                .iter()
                .map(|(n, s, _)| TensorEntry {
                    name: n.clone(),
                    shape: s.clone(),
                })
                .collect(),
        },
    };
    let json =
        serde_json::to_string_pretty(&manifest).map_err(|e| fmt_err("manifest", e.to_string()))?;
    Ok((weights, json, manifest))
}

/// What a threat library, a threat document or an alert is tied to: the model that decides. Two
/// models with the same identity give the same verdicts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelIdentity {
    /// Sha256 (hex) over everything in the model that changes a verdict: the weights file (encoder
    /// parameters, calibration rows, fine-tuning material), the normaliser, the feature schema, the
    /// encoder shape, the benign and known prototypes and the calibration (budget, unknown
    /// threshold). The training record and the metaids version are left out.
    pub model: String,
    /// Feature-schema hash the model was trained on.
    pub schema_hash: String,
    /// Dataset kind (`cic`, `nsl-kdd`, `unsw-nb15`).
    pub dataset: String,
    /// Embedding size.
    pub dim: usize,
}

impl ModelIdentity {
    /// The identity of `model`, whether loaded, trained in this process or changed since: computed
    /// from the bytes [`save`] would write for it, so a saved and reloaded model keeps it.
    pub fn of(model: &ThreatModel) -> Result<Self> {
        let path = model
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from("<in memory>"));
        let (_, json, _) = encode(model, &path)?;
        Self::from_manifest_text(&json, &path)
    }

    /// The identity recorded by a manifest's text (the weights file's hash is taken from it: [`load`]
    /// checks it against the file).
    fn from_manifest_text(text: &str, path: &Path) -> Result<Self> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            field: "<manifest>".into(),
            message: e.to_string(),
        })?;
        let decides = serde_json::json!({
            "identity": "metaids-model-identity-1",
            "dataset": m.dataset,
            "schema_hash": m.schema_hash,
            "normaliser": m.normaliser,
            "encoder": m.encoder,
            "benign_prototypes": m.benign_prototypes,
            "known_prototypes": m.known_prototypes,
            "known_share": m.known_share,
            "calibration": m.calibration,
            "finetune": m.finetune,
            "weights": m.weights,
        });
        let bytes = serde_json::to_vec(&decides).map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            field: "<manifest>".into(),
            message: e.to_string(),
        })?;
        Ok(ModelIdentity {
            model: hex(&Sha256::digest(&bytes)),
            schema_hash: m.schema_hash,
            dataset: m.dataset,
            dim: m.encoder.embedding,
        })
    }
}

/// Writes `model` to the directory `path`: files go to a temporary sibling directory which is then
/// renamed over `path` (an existing model there is replaced only once the new one is complete).
pub fn save(model: &ThreatModel, path: &Path) -> Result<Manifest> {
    let (weights, json, manifest) = encode(model, path)?;
    let fmt_err = |field: &str, message: String| ModelError::Format {
        path: path.to_path_buf(),
        field: field.to_string(),
        message,
    };

    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    for (file, bytes) in [
        (WEIGHTS_FILE, weights.as_slice()),
        (MANIFEST_FILE, json.as_bytes()),
    ] {
        let p = tmp.join(file);
        let f = std::fs::File::create(&p).map_err(io_err(&p))?;
        std::io::Write::write_all(&mut &f, bytes).map_err(io_err(&p))?;
        f.sync_all().map_err(io_err(&p))?;
    }
    if path.exists() {
        if !path.join(MANIFEST_FILE).is_file() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(fmt_err(
                "path",
                "exists and is not a metaids model directory; refusing to replace it".into(),
            ));
        }
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(path, &old).map_err(io_err(path))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    } else {
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
    }
    Ok(manifest)
}

/// Checks, before any work, that [`save`] could write a model to `path`: it must not be an
/// existing file or non-model directory (which `save` refuses to replace), and its parent must be
/// (or be creatable under) a directory this process can write to, tried with a probe directory
/// that is removed at once. Commands that train call this first, so a bad `--out` fails in a
/// second instead of after training.
pub fn check_save_target(path: &Path) -> Result<()> {
    let fmt_err = |message: String| ModelError::Format {
        path: path.to_path_buf(),
        field: "path".into(),
        message,
    };
    if path.exists() && !path.join(MANIFEST_FILE).is_file() {
        return Err(fmt_err(
            "exists and is not a metaids model directory; refusing to replace it".into(),
        ));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The nearest existing ancestor must be a writable directory.
    let mut dir = parent.as_path();
    while !dir.exists() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p,
            _ => {
                dir = Path::new(".");
                break;
            }
        }
    }
    if !dir.is_dir() {
        return Err(fmt_err(format!(
            "{} is not a directory, so the model cannot be written under it",
            dir.display()
        )));
    }
    let probe = dir.join(format!(".metaids-probe-{}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            Ok(())
        }
        Err(e) => Err(fmt_err(format!("cannot write in {}: {e}", dir.display()))),
    }
}

/// Loads and checks a model directory (or its `manifest.json`).
///
/// # Errors
/// [`ModelError::Format`] naming the file and field for: an unreadable or unknown-field manifest, another
/// format version, a normaliser inconsistent with the recorded schema, dataset or input width, a weights
/// file whose sha256 differs, missing or extra tensors, wrong dtypes or shapes, malformed prototypes
/// or a calibration threshold that does not follow from the stored rows.
pub fn load(path: &Path) -> Result<ThreatModel> {
    let dir = if path.is_file() {
        path.parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    } else {
        path.to_path_buf()
    };
    let mpath = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&mpath).map_err(io_err(&mpath))?;
    let ferr = |p: &Path, field: &str, message: String| ModelError::Format {
        path: p.to_path_buf(),
        field: field.to_string(),
        message,
    };
    let raw: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ferr(&mpath, "<json>", e.to_string()))?;
    match raw
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
    {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(ferr(
                &mpath,
                "format_version",
                format!("this build reads version {FORMAT_VERSION}, the file is version {v}"),
            ))
        }
        None => {
            return Err(ferr(
                &mpath,
                "format_version",
                "missing or not a number".into(),
            ))
        }
    }
    let m: Manifest =
        serde_json::from_value(raw).map_err(|e| ferr(&mpath, "<manifest>", e.to_string()))?;
    let normaliser = Normaliser::from_json(&m.normaliser.to_string())
        .map_err(|e| ferr(&mpath, "normaliser", e.to_string()))?;
    if normaliser.schema_hash != m.schema_hash {
        return Err(ferr(
            &mpath,
            "schema_hash",
            format!(
                "{} but the normaliser was fit on schema {}",
                m.schema_hash, normaliser.schema_hash
            ),
        ));
    }
    if normaliser.kind.name() != m.dataset {
        return Err(ferr(
            &mpath,
            "dataset",
            format!(
                "{} but the normaliser is for {}",
                m.dataset, normaliser.kind
            ),
        ));
    }
    m.encoder
        .validate()
        .map_err(|e| ferr(&mpath, "encoder", e.to_string()))?;
    if normaliser.output_dim() != m.encoder.input_dim {
        return Err(ferr(
            &mpath,
            "encoder.input_dim",
            format!(
                "{} but the normaliser outputs {} features",
                m.encoder.input_dim,
                normaliser.output_dim()
            ),
        ));
    }
    let dim = m.encoder.embedding;

    if m.weights.file.contains(['/', '\\']) || m.weights.file.starts_with('.') {
        return Err(ferr(
            &mpath,
            "weights.file",
            format!("{:?} is not a plain file name", m.weights.file),
        ));
    }
    let wpath = dir.join(&m.weights.file);
    let bytes = std::fs::read(&wpath).map_err(io_err(&wpath))?;
    let found = hex(&Sha256::digest(&bytes));
    if found != m.weights.sha256 {
        return Err(ferr(
            &wpath,
            "weights.sha256",
            format!(
                "manifest records {} but the file hashes to {found} (corrupted or replaced)",
                m.weights.sha256
            ),
        ));
    }
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| ferr(&wpath, "<safetensors>", e.to_string()))?;
    let mut expected: Vec<(String, Vec<usize>)> = m.encoder.parameter_shapes();
    expected.push((
        CALIBRATION_TENSOR.to_string(),
        vec![m.calibration.rows, dim],
    ));
    if let Some(fi) = &m.finetune {
        for (n, s) in m.encoder.parameter_shapes() {
            expected.push((format!("{FINETUNE_PREFIX}{n}"), s));
        }
        expected.push((
            FINETUNE_BENIGN_TENSOR.to_string(),
            vec![fi.benign_rows, m.encoder.input_dim],
        ));
        expected.push((
            FINETUNE_CALIBRATION_TENSOR.to_string(),
            vec![fi.calibration_rows, m.encoder.input_dim],
        ));
    }
    let want: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let names: Vec<&str> = st.names().into_iter().collect();
    let have: BTreeSet<&str> = names.iter().copied().collect();
    if let Some(missing) = want.difference(&have).next() {
        return Err(ferr(&wpath, missing, "tensor missing".into()));
    }
    if let Some(extra) = have.difference(&want).next() {
        return Err(ferr(
            &wpath,
            extra,
            "unexpected tensor (not part of this encoder)".into(),
        ));
    }
    let encoder = Encoder::new(m.encoder.clone(), m.training.config.seed)
        .map_err(|e| ferr(&mpath, "encoder", e.to_string()))?;
    let ft_init = Encoder::new(m.encoder.clone(), m.training.config.seed)
        .map_err(|e| ferr(&mpath, "encoder", e.to_string()))?;
    let (mut ft_benign, mut ft_calibration) = (Vec::new(), Vec::new());
    let mut calibration = Vec::new();
    for (name, shape) in &expected {
        let view = st
            .tensor(name)
            .map_err(|e| ferr(&wpath, name, e.to_string()))?;
        if view.dtype() != Dtype::F32 {
            return Err(ferr(
                &wpath,
                name,
                format!("dtype {:?}, expected F32", view.dtype()),
            ));
        }
        if view.shape() != shape.as_slice() {
            return Err(ferr(
                &wpath,
                name,
                format!("shape {:?}, expected {:?}", view.shape(), shape),
            ));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(ferr(&wpath, name, "holds a non-finite value".into()));
        }
        if name == CALIBRATION_TENSOR {
            calibration = values;
        } else if name == FINETUNE_BENIGN_TENSOR {
            ft_benign = values;
        } else if name == FINETUNE_CALIBRATION_TENSOR {
            ft_calibration = values;
        } else if let Some(p) = name.strip_prefix(FINETUNE_PREFIX) {
            ft_init.set_parameter(p, values)?;
        } else {
            encoder.set_parameter(name, values)?;
        }
    }
    let listed: Vec<(String, Vec<usize>)> = m
        .weights
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    if listed != expected {
        let first = listed
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(listed.len().min(expected.len()));
        return Err(ferr(
            &mpath,
            &format!("weights.tensors[{first}]"),
            "does not list the encoder's parameters and the calibration tensor in order".into(),
        ));
    }
    if m.benign_prototypes.is_empty() {
        return Err(ferr(&mpath, "benign_prototypes", "empty".into()));
    }
    let mut prototypes = Vec::with_capacity(m.benign_prototypes.len() * dim);
    for (i, p) in m.benign_prototypes.iter().enumerate() {
        if p.len() != dim || p.iter().any(|v| !v.is_finite()) {
            return Err(ferr(
                &mpath,
                &format!("benign_prototypes[{i}]"),
                format!("{} values, expected {dim} finite values", p.len()),
            ));
        }
        prototypes.extend_from_slice(p);
    }
    let mut known = Vec::with_capacity(m.known_prototypes.len() * dim);
    for (i, p) in m.known_prototypes.iter().enumerate() {
        if p.centre.len() != dim || p.centre.iter().any(|v| !v.is_finite()) {
            return Err(ferr(
                &mpath,
                &format!("known_prototypes[{i}]"),
                format!("{} values, expected {dim} finite values", p.centre.len()),
            ));
        }
        known.extend_from_slice(&p.centre);
    }
    let known_families = m
        .known_prototypes
        .iter()
        .map(|p| p.family.clone())
        .collect();
    let reference = BenignReference::new(dim, prototypes, calibration, m.calibration.fpr_budget)
        .with_known(known_families, known, m.known_share);
    if reference.unknown_threshold.to_bits() != m.calibration.unknown_threshold.to_bits() {
        return Err(ferr(
            &mpath,
            "calibration.unknown_threshold",
            format!(
                "{} recorded, but the stored calibration rows give {}",
                m.calibration.unknown_threshold, reference.unknown_threshold
            ),
        ));
    }
    let finetune = match &m.finetune {
        None => None,
        Some(fi) => Some(
            Finetuner::new(
                fi.config.clone(),
                ft_init,
                ft_benign,
                ft_calibration,
                fi.fpr_budget,
                fi.seed,
            )
            .map_err(|e| ferr(&wpath, "finetune", e.to_string()))?,
        ),
    };
    if let Some(stats) = &m.norm_statistics {
        stats
            .check(&encoder)
            .map_err(|e| ferr(&mpath, "norm_statistics", e.to_string()))?;
    }
    Ok(ThreatModel {
        normaliser,
        encoder,
        reference,
        record: m.training,
        path: Some(dir),
        finetune,
        norm_statistics: m.norm_statistics,
    })
}
