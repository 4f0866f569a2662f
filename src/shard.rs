//! Splitting every scenario's `count` across N instances (a StatefulSet's replicas).
//!
//! Shard `i` of `n` runs a contiguous slice of the workspace numbering; the slices of all
//! shards cover `1..=count` exactly once (100 over 3 shards: 34 + 33 + 33).

use crate::runner::Slice;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub total: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, total: 1 }
    }
}

impl Shard {
    /// Parses `I/N`, where `I` is a number or a pod name ending in `-<ordinal>`
    /// (`scaletestd-2/3`), as a StatefulSet names its pods.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad = || {
            format!(
                "invalid shard {s:?}: expected I/N such as \"0/3\" or \"scaletestd-2/3\", with I < N"
            )
        };
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let ordinal = i.rsplit('-').next().unwrap_or(i);
        let index: u32 = ordinal.parse().map_err(|_| bad())?;
        let total: u32 = n.parse().map_err(|_| bad())?;
        if total == 0 || index >= total {
            return Err(bad());
        }
        Ok(Shard { index, total })
    }

    /// This shard's part of `count`.
    pub fn slice(&self, count: u32) -> Slice {
        let (base, extra) = (count / self.total, count % self.total);
        let len = base + u32::from(self.index < extra);
        let first = 1 + self.index * base + self.index.min(extra);
        Slice { first, count: len }
    }

    /// This shard's part of a concurrency limit (at least 1).
    pub fn concurrency(&self, concurrency: u32) -> u32 {
        self.slice(concurrency).count.max(1)
    }

    /// Whether workspace number `n` of a scenario with `count` workspaces is this shard's.
    pub fn owns(&self, count: u32, n: u32) -> bool {
        let s = self.slice(count);
        n >= s.first && n < s.first + s.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_exactly() {
        let parts: Vec<_> = (0..3)
            .map(|i| Shard { index: i, total: 3 }.slice(100))
            .collect();
        assert_eq!(
            parts.iter().map(|s| s.count).collect::<Vec<_>>(),
            [34, 33, 33]
        );
        assert_eq!(
            parts.iter().map(|s| s.first).collect::<Vec<_>>(),
            [1, 35, 68]
        );
        for total in 1..12 {
            for count in 0..60 {
                let mut next = 1;
                for index in 0..total {
                    let s = Shard { index, total }.slice(count);
                    assert_eq!(s.first, next, "{count} over {total}, shard {index}");
                    next += s.count;
                }
                assert_eq!(next, count + 1);
            }
        }
    }

    #[test]
    fn parses_numbers_and_pod_names() {
        assert_eq!(Shard::parse("2/3"), Ok(Shard { index: 2, total: 3 }));
        assert_eq!(
            Shard::parse("scaletestd-2/3"),
            Ok(Shard { index: 2, total: 3 })
        );
        assert!(Shard::parse("3/3").is_err());
        assert!(Shard::parse("x/3").is_err());
        assert!(Shard::parse("1").is_err());
    }
}
