//! Fit time of the in-crate histogram forest against smartcore's random forest on the same data:
//! the measurement behind writing the forest here (the with-shots baseline refits one per task).
//!
//! `cargo run --release -p metaids-eval --example forest_vs_smartcore`

use std::time::Instant;

use metaids_eval::forest::{BinnedData, ForestConfig, RandomForest};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The shape of one with-shots fit: ~5,000 training rows, ~120 preprocessed features, two classes.
    let (n, d) = (5000, 120);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 2) as u32;
        for j in 0..d {
            let shift = if j < 10 { 0.3 * class as f32 } else { 0.0 };
            x.push(rng.random::<f32>() + shift);
        }
        y.push(class);
    }
    println!(
        "{n} rows × {d} features, best of 3 fits, {} threads",
        rayon::current_num_threads()
    );
    for trees in [20usize, 50] {
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            let data = BinnedData::new(&x, d, 64);
            let forest = RandomForest::fit(
                &data,
                &y,
                &vec![1.0; n],
                2,
                &ForestConfig {
                    trees,
                    ..Default::default()
                },
                7,
            );
            std::hint::black_box(forest.predict(&x[..d]));
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "metaids histogram forest, {trees:>2} trees: {:>8.3} s per fit",
            best
        );
    }
    let rows: Vec<Vec<f64>> = x
        .chunks(d)
        .map(|r| r.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let matrix = DenseMatrix::from_2d_vec(&rows)?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        let params = RandomForestClassifierParameters::default()
            .with_n_trees(20)
            .with_seed(7);
        let forest = RandomForestClassifier::fit(&matrix, &y, params)?;
        std::hint::black_box(forest.predict(&DenseMatrix::from_2d_vec(&rows[..1].to_vec())?)?);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "smartcore 0.7 random forest, 20 trees: {:>8.3} s per fit",
        best
    );
    Ok(())
}
