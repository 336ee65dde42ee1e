//! A histogram random forest (Gini, bootstrap, √d features per split): the classical baselines'
//! (`metaids-eval`) and the site forest's ([`crate::site_forest`]).
//!
//! Written here rather than taken from smartcore or linfa because the with-shots baseline refits a
//! forest in every episode (thousands of fits per benchmark): smartcore 0.7 needs about 1 s to fit 20
//! trees on 5,000 × 120 rows on this machine and takes no sample weights, which would make one benchmark
//! run take the better part of an hour. Features are quantised once into at most 64 quantile bins, so a
//! split search is a histogram scan. An accuracy-equivalence test against smartcore lives in this
//! crate's tests. This module does not preprocess: it takes the normalised matrix.

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Forest hyper-parameters (fixed defaults: no choice is made on evaluation data).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForestConfig {
    /// Number of trees.
    pub trees: usize,
    /// Maximum depth.
    pub max_depth: usize,
    /// Minimum total sample weight in a leaf.
    pub min_leaf_weight: f32,
    /// Features tried per split; `None` means ⌈√d⌉.
    pub features_per_split: Option<usize>,
    /// Quantile bins per feature (at most 256).
    pub bins: usize,
}

impl Default for ForestConfig {
    fn default() -> Self {
        ForestConfig {
            trees: 50,
            max_depth: 20,
            min_leaf_weight: 1.0,
            features_per_split: None,
            bins: 64,
        }
    }
}

/// Per-feature quantile edges; a value's bin is the number of edges below it.
#[derive(Debug, Clone)]
pub struct Binner {
    edges: Vec<Vec<f32>>,
}

impl Binner {
    /// Fits quantile edges on `x` (`n × d`, row-major).
    pub fn fit(x: &[f32], d: usize, bins: usize) -> Self {
        let n = x.len().checked_div(d).unwrap_or(0);
        let bins = bins.clamp(2, 256);
        let edges = (0..d)
            .map(|j| {
                let mut col: Vec<f32> = (0..n).map(|i| x[i * d + j]).collect();
                col.sort_unstable_by(f32::total_cmp);
                let mut e: Vec<f32> = (1..bins)
                    .map(|b| col.get(b * n / bins).copied().unwrap_or(0.0))
                    .collect();
                e.dedup();
                // The largest value needs no edge above it.
                if let (Some(&last), Some(&max)) = (e.last(), col.last()) {
                    if last >= max {
                        e.pop();
                    }
                }
                e
            })
            .collect();
        Binner { edges }
    }

    /// Bins one row into `out`.
    pub fn bin_row(&self, row: &[f32], out: &mut [u8]) {
        for ((o, &v), e) in out.iter_mut().zip(row).zip(&self.edges) {
            *o = e.partition_point(|&t| t < v) as u8;
        }
    }

    /// Bins every row of `x`.
    pub fn bin(&self, x: &[f32]) -> Vec<u8> {
        let d = self.edges.len();
        let mut out = vec![0u8; x.len()];
        for (row, o) in x.chunks_exact(d.max(1)).zip(out.chunks_exact_mut(d.max(1))) {
            self.bin_row(row, o);
        }
        out
    }

    fn threshold(&self, feature: usize, bin: u8) -> f32 {
        self.edges[feature][bin as usize]
    }
}

#[derive(Debug, Clone)]
enum Node {
    Split {
        feature: u32,
        threshold: f32,
        left: u32,
        right: u32,
    },
    Leaf {
        probs: Box<[f32]>,
    },
}

/// A fitted forest.
#[derive(Debug, Clone)]
pub struct RandomForest {
    trees: Vec<Vec<Node>>,
    classes: usize,
}

/// Binned training data shared by many fits, stored column by column so that a split search reads
/// one feature's codes contiguously.
#[derive(Debug, Clone)]
pub struct BinnedData {
    /// The binner (fit on the base rows).
    pub binner: Binner,
    /// Bin codes, one column of `n` codes per feature.
    pub columns: Vec<Vec<u8>>,
    /// Feature count.
    pub d: usize,
    n: usize,
}

impl BinnedData {
    /// Fits a binner on `x` (`n × d`, row-major) and bins it.
    pub fn new(x: &[f32], d: usize, bins: usize) -> Self {
        let binner = Binner::fit(x, d, bins);
        let mut data = BinnedData {
            binner,
            columns: vec![Vec::new(); d],
            d,
            n: 0,
        };
        data.append(x);
        data
    }

    /// An empty set of rows binned with `binner`.
    pub fn empty(binner: Binner, d: usize) -> Self {
        BinnedData {
            binner,
            columns: vec![Vec::new(); d],
            d,
            n: 0,
        }
    }

    fn append(&mut self, x: &[f32]) {
        let codes = self.binner.bin(x);
        let rows = codes.len().checked_div(self.d).unwrap_or(0);
        for (j, col) in self.columns.iter_mut().enumerate() {
            col.extend((0..rows).map(|i| codes[i * self.d + j]));
        }
        self.n += rows;
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether no rows are held.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// A copy with extra rows (raw values, row-major) appended, binned with the same edges.
    pub fn with_rows(&self, extra: &[f32]) -> Self {
        let mut data = self.clone();
        data.append(extra);
        data
    }
}

impl RandomForest {
    /// Fits on binned rows with labels `y < classes` and per-row weights.
    pub fn fit(
        data: &BinnedData,
        y: &[u32],
        weights: &[f32],
        classes: usize,
        cfg: &ForestConfig,
        seed: u64,
    ) -> Self {
        let n = data.len();
        assert_eq!(y.len(), n, "labels must match rows");
        let trees: Vec<Vec<Node>> = (0..cfg.trees)
            .into_par_iter()
            .map(|t| {
                let mut rng = ChaCha8Rng::seed_from_u64(
                    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .wrapping_add(t as u64),
                );
                // Bootstrap as multiplicities, so one weight array carries both.
                let mut w = vec![0f32; n];
                for _ in 0..n {
                    w[rng.random_range(0..n)] += 1.0;
                }
                for (wi, &sw) in w.iter_mut().zip(weights) {
                    *wi *= sw;
                }
                let mut rows: Vec<u32> = (0..n as u32).filter(|&i| w[i as usize] > 0.0).collect();
                let mut b = TreeBuilder {
                    data,
                    y,
                    w: &w,
                    classes,
                    cfg,
                    rng,
                    nodes: Vec::new(),
                };
                b.build(&mut rows, 0);
                b.nodes
            })
            .collect();
        RandomForest { trees, classes }
    }

    /// Mean class probabilities for one raw row.
    pub fn predict_proba(&self, row: &[f32]) -> Vec<f32> {
        let mut p = vec![0f32; self.classes];
        for tree in &self.trees {
            let mut i = 0usize;
            loop {
                match &tree[i] {
                    Node::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    } => {
                        i = if row[*feature as usize] <= *threshold {
                            *left as usize
                        } else {
                            *right as usize
                        };
                    }
                    Node::Leaf { probs } => {
                        p.iter_mut().zip(probs.iter()).for_each(|(a, b)| *a += b);
                        break;
                    }
                }
            }
        }
        let k = self.trees.len().max(1) as f32;
        p.iter_mut().for_each(|v| *v /= k);
        p
    }

    /// Most probable class of one raw row.
    pub fn predict(&self, row: &[f32]) -> u32 {
        let p = self.predict_proba(row);
        p.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .map_or(0, |(c, _)| c as u32)
    }
}

struct TreeBuilder<'a> {
    data: &'a BinnedData,
    y: &'a [u32],
    w: &'a [f32],
    classes: usize,
    cfg: &'a ForestConfig,
    rng: ChaCha8Rng,
    nodes: Vec<Node>,
}

impl TreeBuilder<'_> {
    fn leaf(&mut self, counts: &[f64]) -> u32 {
        let total: f64 = counts.iter().sum();
        let probs = counts
            .iter()
            .map(|c| if total > 0.0 { (c / total) as f32 } else { 0.0 })
            .collect();
        self.nodes.push(Node::Leaf { probs });
        (self.nodes.len() - 1) as u32
    }

    fn build(&mut self, rows: &mut [u32], depth: usize) -> u32 {
        let c = self.classes;
        // Class weights summed in four lanes (see the histogram below for why).
        let mut lanes = vec![0f64; 4 * c];
        for (i, &r) in rows.iter().enumerate() {
            lanes[(i % 4) * c + self.y[r as usize] as usize] += f64::from(self.w[r as usize]);
        }
        let counts: Vec<f64> = (0..c)
            .map(|k| (0..4).map(|l| lanes[l * c + k]).sum())
            .collect();
        let total: f64 = counts.iter().sum();
        let pure = counts.iter().filter(|&&v| v > 0.0).count() <= 1;
        let min_leaf = f64::from(self.cfg.min_leaf_weight);
        if pure || depth >= self.cfg.max_depth || total < 2.0 * min_leaf {
            return self.leaf(&counts);
        }
        let d = self.data.d;
        let mtry = self
            .cfg
            .features_per_split
            .unwrap_or_else(|| (d as f64).sqrt().ceil() as usize)
            .clamp(1, d);
        let gini = |cnt: &[f64], tot: f64| -> f64 {
            if tot <= 0.0 {
                return 0.0;
            }
            1.0 - cnt.iter().map(|v| (v / tot) * (v / tot)).sum::<f64>()
        };
        let parent = gini(&counts, total) * total;
        let mut best: Option<(f64, usize, u8)> = None;
        // Four interleaved histograms: consecutive rows often share a bin, and one histogram would make
        // every update wait for the previous one to the same slot.
        const LANES: usize = 4;
        let stride = 256 * c;
        let mut hist = vec![0f64; LANES * stride];
        let mut left = vec![0f64; c];
        let mut right = vec![0f64; c];
        let node: Vec<(u32, usize, f64)> = rows
            .iter()
            .map(|&r| {
                (
                    r,
                    self.y[r as usize] as usize,
                    f64::from(self.w[r as usize]),
                )
            })
            .collect();
        for f in sample(&mut self.rng, d, mtry) {
            let mut max_bin = 0usize;
            let column = &self.data.columns[f];
            for (i, &(r, y, w)) in node.iter().enumerate() {
                let b = usize::from(column[r as usize]);
                max_bin = max_bin.max(b);
                hist[(i % LANES) * stride + b * c + y] += w;
            }
            let used = (max_bin + 1) * c;
            for lane in 1..LANES {
                for j in 0..used {
                    hist[j] += hist[lane * stride + j];
                    hist[lane * stride + j] = 0.0;
                }
            }
            left.iter_mut().for_each(|v| *v = 0.0);
            let mut left_total = 0.0;
            for b in 0..max_bin {
                for k in 0..c {
                    left[k] += hist[b * c + k];
                    left_total += hist[b * c + k];
                }
                let right_total = total - left_total;
                if left_total < min_leaf || right_total < min_leaf {
                    continue;
                }
                for k in 0..c {
                    right[k] = counts[k] - left[k];
                }
                let impurity =
                    gini(&left, left_total) * left_total + gini(&right, right_total) * right_total;
                if impurity < parent - 1e-12 && best.is_none_or(|(bi, _, _)| impurity < bi) {
                    best = Some((impurity, f, b as u8));
                }
            }
            hist[..used].iter_mut().for_each(|h| *h = 0.0);
        }
        let Some((_, feature, bin)) = best else {
            return self.leaf(&counts);
        };
        // In-place partition: left rows first; each side keeps ascending row order for cache locality.
        let column = &self.data.columns[feature];
        let mut right_rows: Vec<u32> = Vec::new();
        let mut n_left = 0;
        for i in 0..rows.len() {
            let row = rows[i];
            if column[row as usize] <= bin {
                rows[n_left] = row;
                n_left += 1;
            } else {
                right_rows.push(row);
            }
        }
        rows[n_left..].copy_from_slice(&right_rows);
        let (l, r) = rows.split_at_mut(n_left);
        let me = self.nodes.len();
        self.nodes.push(Node::Leaf {
            probs: Box::new([]),
        });
        let left = self.build(l, depth + 1);
        let right = self.build(r, depth + 1);
        let threshold = self.data.binner.threshold(feature, bin);
        self.nodes[me] = Node::Split {
            feature: feature as u32,
            threshold,
            left,
            right,
        };
        me as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = 6;
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let row: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
            // A non-axis-aligned rule with noise features.
            y.push(u32::from(row[0] + 0.5 * row[1] > 0.1));
            x.extend(row);
        }
        (x, y)
    }

    #[test]
    fn learns_a_simple_rule_and_is_deterministic() {
        let (x, y) = toy(2000, 1);
        let data = BinnedData::new(&x, 6, 64);
        let w = vec![1.0; y.len()];
        let cfg = ForestConfig::default();
        let f = RandomForest::fit(&data, &y, &w, 2, &cfg, 7);
        let (xt, yt) = toy(1000, 2);
        let acc = xt
            .chunks(6)
            .zip(&yt)
            .filter(|(r, &t)| f.predict(r) == t)
            .count() as f64
            / 1000.0;
        assert!(acc > 0.9, "accuracy {acc}");
        let g = RandomForest::fit(&data, &y, &w, 2, &cfg, 7);
        for r in xt.chunks(6).take(50) {
            assert_eq!(f.predict_proba(r), g.predict_proba(r));
        }
    }

    #[test]
    fn weights_shift_the_decision() {
        // Twenty identical points of each label: inseparable, so every leaf holds both; the heavier
        // label must win.
        let x = vec![0.0f32; 80];
        let y: Vec<u32> = (0..40).map(|i| u32::from(i >= 20)).collect();
        let w: Vec<f32> = y.iter().map(|&c| if c == 1 { 50.0 } else { 1.0 }).collect();
        let data = BinnedData::new(&x, 2, 8);
        let cfg = ForestConfig {
            trees: 20,
            ..Default::default()
        };
        let f = RandomForest::fit(&data, &y, &w, 2, &cfg, 3);
        assert_eq!(f.predict(&[0.0, 0.0]), 1);
        let unweighted = RandomForest::fit(&data, &y, &[1.0; 40], 2, &cfg, 3);
        let p = unweighted.predict_proba(&[0.0, 0.0]);
        assert!((p[1] - 0.5).abs() < 0.2, "{p:?}");
    }

    /// Equivalence with the library path: on the same data, the histogram forest's held-out accuracy is
    /// within two points of smartcore's random forest.
    #[test]
    fn accuracy_matches_smartcore() {
        use smartcore::ensemble::random_forest_classifier::{
            RandomForestClassifier, RandomForestClassifierParameters,
        };
        use smartcore::linalg::basic::matrix::DenseMatrix;
        let (x, y) = toy(1500, 11);
        let (xt, yt) = toy(1000, 12);
        let data = BinnedData::new(&x, 6, 64);
        let ours = RandomForest::fit(
            &data,
            &y,
            &vec![1.0; y.len()],
            2,
            &ForestConfig::default(),
            5,
        );
        let ours_acc = xt
            .chunks(6)
            .zip(&yt)
            .filter(|(r, &t)| ours.predict(r) == t)
            .count() as f64
            / 1000.0;
        let rows: Vec<Vec<f64>> = x
            .chunks(6)
            .map(|r| r.iter().map(|&v| f64::from(v)).collect())
            .collect();
        let test: Vec<Vec<f64>> = xt
            .chunks(6)
            .map(|r| r.iter().map(|&v| f64::from(v)).collect())
            .collect();
        let mx = DenseMatrix::from_2d_vec(&rows).expect("matrix");
        let mt = DenseMatrix::from_2d_vec(&test).expect("matrix");
        let params = RandomForestClassifierParameters::default()
            .with_n_trees(50)
            .with_seed(5);
        let theirs = RandomForestClassifier::fit(&mx, &y, params).expect("fit");
        let pred: Vec<u32> = theirs.predict(&mt).expect("predict");
        let theirs_acc = pred.iter().zip(&yt).filter(|(a, b)| a == b).count() as f64 / 1000.0;
        assert!(
            (ours_acc - theirs_acc).abs() < 0.02,
            "ours {ours_acc} smartcore {theirs_acc}"
        );
    }
}
