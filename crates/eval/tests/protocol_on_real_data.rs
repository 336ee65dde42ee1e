//! The benchmark harness on real shared data: split disjointness, preprocessing fit on training rows
//! only, reproducibility with a seed.

use std::collections::HashSet;
use std::path::PathBuf;

use metaids_core::duplicates::DuplicateIndex;
use metaids_core::preprocess::{Normaliser, PreprocessConfig};
use metaids_core::split::SplitSpec;
use metaids_core::FlowFrame;
use metaids_eval::{
    BaselineConfig, Benchmark, EvalConfig, FewShotMethod, Forest, Knn, NearestCentroid, Report,
};
use metaids_ingest::{read_files, resolve_files, ReadOptions};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn shared(sub: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(sub);
    assert!(p.exists(), "shared data missing at {}", p.display());
    p
}

fn load(split: &str, dir: PathBuf) -> (FlowFrame, SplitSpec, String) {
    let text = std::fs::read_to_string(repo(split)).expect("split file");
    let spec = SplitSpec::from_toml(&text).expect("spec");
    let files = resolve_files(&dir, &spec.files).expect("files");
    let opts = ReadOptions {
        dataset: Some(spec.dataset),
        ..Default::default()
    };
    let (frame, _) = read_files(&files, &opts).expect("read");
    (frame, spec, text)
}

#[test]
fn nsl_kdd_split_keeps_novel_and_benign_queries_out_of_training() {
    let (frame, spec, text) = load("splits/nsl-kdd.toml", shared("nsl-kdd"));
    // Every row keeps its role (no query twin removed), so the roles partition the frame.
    let cfg = EvalConfig {
        episodes: 3,
        keep_twins: true,
        ..EvalConfig::default()
    };
    let bench = Benchmark::new(
        &frame,
        &spec,
        "nsl-kdd.toml",
        &text,
        cfg,
        PreprocessConfig::default(),
        BaselineConfig::default(),
    )
    .expect("benchmark");
    let split = &bench.split;
    assert_eq!(split.novel.len(), 17, "all 17 test-only families are novel");
    assert!(split.absent.is_empty());
    let training: HashSet<usize> = split.training_rows().into_iter().collect();
    let forbidden: HashSet<usize> = split
        .novel
        .values()
        .flatten()
        .chain(&split.benign_query)
        .copied()
        .collect();
    assert!(training.is_disjoint(&forbidden));
    assert_eq!(
        training.len() + forbidden.len(),
        frame.len(),
        "every row has exactly one role"
    );
    for fam in split.novel.keys() {
        assert!(!split.seen.contains_key(fam) && !split.validation.contains_key(fam));
    }
    // No novel family ever occurs in KDDTrain+ (file 0).
    for rows in split.novel.values() {
        assert!(rows.iter().all(|&r| frame.sources[r].file == 1));
    }
    assert_eq!(bench.normaliser.fit_rows, training.len());
    // Every task's support comes from its family and every benign query from the query pool.
    let pool: HashSet<usize> = split.benign_query.iter().copied().collect();
    for t in &bench.plan.detection {
        let fam: HashSet<usize> = split.novel[&t.family].iter().copied().collect();
        assert!(t.support.iter().all(|r| fam.contains(r)));
        for (q, attack) in t.queries.iter().zip(&t.truth) {
            assert!(if *attack {
                fam.contains(q)
            } else {
                pool.contains(q)
            });
        }
    }
    // Families with fewer than K + 10 rows are listed, not dropped silently.
    assert!(bench
        .plan
        .too_small
        .iter()
        .any(|t| t.family == "worm" && t.rows == 2));
}

#[test]
fn queries_with_a_twin_in_training_or_support_are_removed_by_default() {
    let (frame, spec, text) = load("splits/nsl-kdd.toml", shared("nsl-kdd"));
    let bench = |keep_twins| {
        let cfg = EvalConfig {
            episodes: 5,
            keep_twins,
            ..EvalConfig::default()
        };
        Benchmark::new(
            &frame,
            &spec,
            "nsl-kdd.toml",
            &text,
            cfg,
            PreprocessConfig::default(),
            BaselineConfig::default(),
        )
        .expect("benchmark")
    };
    let (kept, removed) = (bench(true), bench(false));
    let index = DuplicateIndex::new(&frame);
    let training = index.reference(&kept.split.training_rows());
    let twin = |r: usize| index.has_twin(r, &training);
    // NSL-KDD's query rows do repeat training rows: the kept plan queries some, the default none.
    let twins_queried = |b: &Benchmark<'_>| {
        b.plan
            .detection
            .iter()
            .flat_map(|t| &t.queries)
            .chain(&b.plan.pool)
            .filter(|&&q| twin(q))
            .count()
    };
    assert!(twins_queried(&kept) > 0);
    assert_eq!(twins_queried(&removed), 0);
    for t in &removed.plan.detection {
        assert!(t.support.iter().all(|&s| !twin(s)));
        let attack = t.truth.iter().filter(|&&a| a).count();
        assert_eq!(2 * attack, t.queries.len(), "balanced after removal");
        for (&q, _) in t.queries.iter().zip(&t.truth).filter(|(_, &a)| a) {
            assert!(t.support.iter().all(|&s| !index.same_values(q, s)));
        }
    }
    // What was removed is counted, and with the rows left adds up to the kept split.
    let before = kept.split.benign_query.len();
    let pool = &removed.twins_removed[0];
    assert_eq!(pool.role, "benign query pool");
    assert_eq!(pool.removed + pool.left, before);
    assert!(pool.removed > 0);
}

#[test]
fn preprocessing_ignores_novel_and_benign_query_rows() {
    let (mut frame, spec, _) = load("splits/cic-ids2017.toml", shared("cic-ids2017-improved"));
    let split = spec.apply(&frame).expect("split");
    let rows = split.training_rows();
    let before = Normaliser::fit(&frame, &rows, PreprocessConfig::default()).expect("fit");
    // Corrupt every row the fit must not see; the fit must not change.
    let d = frame.layout.numeric.len();
    for &r in split.novel.values().flatten().chain(&split.benign_query) {
        frame.numeric[r * d..(r + 1) * d]
            .iter_mut()
            .for_each(|v| *v = 1e30);
    }
    let after = Normaliser::fit(&frame, &rows, PreprocessConfig::default()).expect("fit");
    assert_eq!(before, after);
}

fn small_run(seed: u64) -> Report {
    let (frame, spec, text) = load("splits/cic-ids2017.toml", shared("cic-ids2017-improved"));
    let cfg = EvalConfig {
        shots: vec![1, 5],
        episodes: 4,
        seed,
        ..EvalConfig::default()
    };
    let baselines = BaselineConfig {
        forest: metaids_eval::forest::ForestConfig {
            trees: 10,
            ..Default::default()
        },
        ..Default::default()
    };
    let bench = Benchmark::new(
        &frame,
        &spec,
        "cic-ids2017.toml",
        &text,
        cfg,
        PreprocessConfig::default(),
        baselines,
    )
    .expect("benchmark");
    let mut methods: Vec<Box<dyn FewShotMethod>> = vec![
        Box::new(NearestCentroid::default()),
        Box::new(Knn::new(baselines, true)),
        Box::new(Forest::new(baselines, true)),
    ];
    bench
        .run(&mut methods, Vec::new(), &|_, _| {})
        .expect("run")
}

#[test]
fn same_seed_same_numbers() {
    let a = small_run(7);
    let b = small_run(7);
    assert_eq!(a.results, b.results);
    assert_eq!(a.results.len(), 3 * 2);
    let c = small_run(8);
    assert_ne!(a.results, c.results, "another seed draws other episodes");
    // Sanity: a few shots of a novel family are detected far better than chance by the forest.
    let forest5 = a
        .results
        .iter()
        .find(|r| r.method == "random-forest+shots" && r.shots == 5)
        .expect("row");
    assert!(forest5.macro_f1.mean > 0.8, "{:?}", forest5.macro_f1);
    assert_eq!(forest5.per_family.len(), 5);
}
