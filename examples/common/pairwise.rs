//! Pairwise clustering scores, shared by `examples/grouping_quality.rs` and
//! `tests/e2e/grouping.rs` (included with `#[path]`).

/// Pair counts over `(predicted group, true label)` items.
pub struct Pairs {
    /// Same group, same label.
    pub together: u64,
    /// Same group, different labels.
    pub mixed: u64,
    /// Same label, different groups.
    pub split: u64,
}

impl Pairs {
    pub fn count<G: PartialEq, L: PartialEq>(items: &[(G, L)]) -> Pairs {
        let mut pairs = Pairs {
            together: 0,
            mixed: 0,
            split: 0,
        };
        for (i, a) in items.iter().enumerate() {
            for b in &items[i + 1..] {
                match (a.0 == b.0, a.1 == b.1) {
                    (true, true) => pairs.together += 1,
                    (true, false) => pairs.mixed += 1,
                    (false, true) => pairs.split += 1,
                    (false, false) => {}
                }
            }
        }
        pairs
    }

    pub fn precision(&self) -> f64 {
        self.together as f64 / (self.together + self.mixed).max(1) as f64
    }

    pub fn recall(&self) -> f64 {
        self.together as f64 / (self.together + self.split).max(1) as f64
    }
}
