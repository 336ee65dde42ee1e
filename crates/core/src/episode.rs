//! Seeded episode sampling: N-way K-shot Q-query episodes for meta-training and evaluation, and the
//! binary detection tasks of the novel-family protocol.
//!
//! Every episode draws its own RNG from `(seed, purpose, K, episode index)`, so an episode is the same
//! whatever else was sampled before it, and every method sees the very same episodes. This module
//! samples row indices only; it does not look at features.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// A deterministic RNG for one episode.
pub fn episode_rng(seed: u64, purpose: &str, shots: usize, episode: usize) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(purpose.as_bytes());
    h.update((shots as u64).to_le_bytes());
    h.update((episode as u64).to_le_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&digest);
    ChaCha8Rng::from_seed(bytes)
}

/// One class offered to the sampler: a name and its row indices.
#[derive(Debug, Clone, Copy)]
pub struct ClassRows<'a> {
    /// Class name.
    pub name: &'a str,
    /// Rows of that class.
    pub rows: &'a [usize],
}

/// An N-way K-shot Q-query episode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// The N class names, in way order.
    pub classes: Vec<String>,
    /// K support rows per way.
    pub support: Vec<Vec<usize>>,
    /// Q query rows per way.
    pub query: Vec<Vec<usize>>,
}

/// Samples N-way K-shot Q-query episodes, in the manner of learn2learn's `NWays`/`KShots` transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpisodeSampler {
    /// N: classes per episode.
    pub ways: usize,
    /// K: support rows per class.
    pub shots: usize,
    /// Q: query rows per class.
    pub queries: usize,
}

impl EpisodeSampler {
    /// Samples an episode from `classes` (only those with at least K + Q rows are eligible).
    ///
    /// `always` names a class that is one of the ways in every episode (benign during meta-training).
    /// Returns `None` when fewer than N classes are eligible or `always` is not eligible.
    pub fn sample(
        &self,
        classes: &[ClassRows<'_>],
        always: Option<&str>,
        rng: &mut ChaCha8Rng,
    ) -> Option<Episode> {
        let need = self.shots + self.queries;
        let eligible: Vec<&ClassRows<'_>> =
            classes.iter().filter(|c| c.rows.len() >= need).collect();
        let mut chosen: Vec<&ClassRows<'_>> = Vec::with_capacity(self.ways);
        if let Some(a) = always {
            chosen.push(*eligible.iter().find(|c| c.name == a)?);
        }
        let rest: Vec<&ClassRows<'_>> = eligible
            .iter()
            .copied()
            .filter(|c| Some(c.name) != always)
            .collect();
        let more = self.ways.checked_sub(chosen.len())?;
        if rest.len() < more {
            return None;
        }
        chosen.extend(rest.choose_multiple(rng, more).copied());
        let mut ep = Episode {
            classes: Vec::new(),
            support: Vec::new(),
            query: Vec::new(),
        };
        for c in chosen {
            let picked: Vec<usize> = c.rows.choose_multiple(rng, need).copied().collect();
            ep.classes.push(c.name.to_string());
            ep.support.push(picked[..self.shots].to_vec());
            ep.query.push(picked[self.shots..].to_vec());
        }
        Some(ep)
    }
}

/// A binary detection task of the novel-family protocol: K support rows of one family; queries are
/// other rows of that family (attack) and as many benign query-pool rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectionTask {
    /// The novel family.
    pub family: String,
    /// K.
    pub shots: usize,
    /// Episode index.
    pub episode: usize,
    /// K support rows of the family.
    pub support: Vec<usize>,
    /// Query rows: the family's first, then benign.
    pub queries: Vec<usize>,
    /// Ground truth per query: true for the family (attack), false for benign.
    pub truth: Vec<bool>,
}

/// Samples a detection task: K support and `min(max_queries, rows − K)` query rows of `family_rows`, and
/// as many rows of `benign_pool`. `None` if the family has fewer than K + 1 rows or the pool is too small.
pub fn sample_detection_task(
    family: &str,
    family_rows: &[usize],
    benign_pool: &[usize],
    shots: usize,
    max_queries: usize,
    rng: &mut ChaCha8Rng,
    episode: usize,
) -> Option<DetectionTask> {
    let q = max_queries.min(family_rows.len().checked_sub(shots)?);
    if q == 0 || benign_pool.len() < q {
        return None;
    }
    let mut picked: Vec<usize> = family_rows
        .choose_multiple(rng, shots + q)
        .copied()
        .collect();
    // choose_multiple's order is random but keep it explicit: shuffle once more is unnecessary.
    let queries_attack = picked.split_off(shots);
    let benign: Vec<usize> = benign_pool.choose_multiple(rng, q).copied().collect();
    let mut queries = queries_attack;
    queries.extend(benign);
    let truth = (0..2 * q).map(|i| i < q).collect();
    Some(DetectionTask {
        family: family.to_string(),
        shots,
        episode,
        support: picked,
        queries,
        truth,
    })
}

/// Shuffles a copy of `rows` with a seed and keeps at most `cap`, sorted: a seeded stratum cap.
pub fn seeded_subsample(rows: &[usize], cap: usize, seed: u64) -> Vec<usize> {
    if rows.len() <= cap {
        return rows.to_vec();
    }
    let mut v = rows.to_vec();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    v.shuffle(&mut rng);
    v.truncate(cap);
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn same_seed_same_episode_and_benign_always_in() {
        let a: Vec<usize> = (0..50).collect();
        let b: Vec<usize> = (100..130).collect();
        let c: Vec<usize> = (200..205).collect();
        let d: Vec<usize> = (300..340).collect();
        let classes = [
            ClassRows {
                name: "benign",
                rows: &a,
            },
            ClassRows {
                name: "b",
                rows: &b,
            },
            ClassRows {
                name: "c",
                rows: &c,
            },
            ClassRows {
                name: "d",
                rows: &d,
            },
        ];
        let s = EpisodeSampler {
            ways: 3,
            shots: 5,
            queries: 5,
        };
        let e1 = s
            .sample(&classes, Some("benign"), &mut episode_rng(1, "t", 5, 0))
            .expect("episode");
        let e2 = s
            .sample(&classes, Some("benign"), &mut episode_rng(1, "t", 5, 0))
            .expect("episode");
        assert_eq!(e1, e2);
        assert_eq!(e1.classes[0], "benign");
        // "c" has 5 rows < K + Q = 10: never chosen.
        assert!(!e1.classes.contains(&"c".to_string()));
        let e3 = s
            .sample(&classes, Some("benign"), &mut episode_rng(2, "t", 5, 0))
            .expect("episode");
        assert!(e3 != e1 || e3.support != e1.support);
        // Four ways are impossible with only three eligible classes.
        let s4 = EpisodeSampler { ways: 4, ..s };
        assert!(s4
            .sample(&classes, Some("benign"), &mut episode_rng(1, "t", 5, 0))
            .is_none());
    }

    #[test]
    fn detection_task_shapes() {
        let fam: Vec<usize> = (0..30).collect();
        let benign: Vec<usize> = (1000..1100).collect();
        let t = sample_detection_task("x", &fam, &benign, 5, 50, &mut episode_rng(0, "d", 5, 0), 0)
            .expect("task");
        assert_eq!(t.support.len(), 5);
        assert_eq!(t.queries.len(), 50);
        assert_eq!(t.truth.iter().filter(|&&x| x).count(), 25);
        assert!(sample_detection_task(
            "x",
            &fam[..5],
            &benign,
            5,
            50,
            &mut episode_rng(0, "d", 5, 0),
            0
        )
        .is_none());
    }

    proptest! {
        #[test]
        fn support_and_queries_are_disjoint(n in 12usize..200, k in 1usize..11, seed in 0u64..1000) {
            let fam: Vec<usize> = (0..n).collect();
            let benign: Vec<usize> = (10_000..10_500).collect();
            let t = sample_detection_task("x", &fam, &benign, k, 50, &mut episode_rng(seed, "d", k, 0), 0).expect("task");
            for s in &t.support {
                prop_assert!(!t.queries.contains(s));
            }
            let mut q = t.queries.clone();
            q.sort_unstable();
            q.dedup();
            prop_assert_eq!(q.len(), t.queries.len());
            for (row, attack) in t.queries.iter().zip(&t.truth) {
                prop_assert_eq!(*attack, *row < n);
            }
        }
    }
}
