//! The K-shot protocol (SPEC §7): per category and run, K distinct normal training images
//! drawn at random, deterministically for (seed, run, category name), so that a run can be
//! repeated exactly and every category's draw is independent of the others.

use crate::rng::Rng;
use anyhow::{ensure, Result};

/// FNV-1a of a category name.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `k` distinct indices of `0..n`, sorted, for (`seed`, `run`, `category`): a partial
/// Fisher–Yates shuffle driven by [`Rng`] (SplitMix64).
pub fn draw_references(
    n: usize,
    k: usize,
    seed: u64,
    run: usize,
    category: &str,
) -> Result<Vec<usize>> {
    ensure!(k > 0, "the number of shots must be at least 1");
    ensure!(
        n >= k,
        "category {category} has {n} normal training image(s), fewer than the {k} shots asked for"
    );
    let mut rng = Rng::new(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (run as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
            ^ name_hash(category),
    );
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + (rng.next_u64() % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    let mut out = idx[..k].to_vec();
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::draw_references;

    #[test]
    fn deterministic_distinct_and_varied() {
        let a = draw_references(50, 4, 7, 0, "bottle").unwrap();
        assert_eq!(a, draw_references(50, 4, 7, 0, "bottle").unwrap());
        assert_eq!(a.len(), 4);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a[3] < 50);
        let others = [
            draw_references(50, 4, 8, 0, "bottle").unwrap(),
            draw_references(50, 4, 7, 1, "bottle").unwrap(),
            draw_references(50, 4, 7, 0, "cable").unwrap(),
        ];
        assert!(others.iter().all(|o| *o != a), "{a:?} {others:?}");
        assert_eq!(draw_references(3, 3, 1, 2, "x").unwrap(), vec![0, 1, 2]);
        // every index is reachable
        let mut seen = [false; 10];
        for run in 0..200 {
            seen[draw_references(10, 1, 0, run, "c").unwrap()[0]] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn too_few_training_images_is_an_error_naming_the_category() {
        let e = draw_references(2, 4, 0, 0, "screw").unwrap_err();
        assert!(format!("{e}").contains("screw"), "{e}");
        assert!(draw_references(5, 0, 0, 0, "screw").is_err());
    }
}
