//! A Fenwick (binary indexed) tree over integer weights: point update and weighted pick in
//! O(log n). Integer weights keep the sums exact however many updates are applied.

#[derive(Clone, Debug)]
pub(crate) struct Fenwick {
    /// 1-based: `tree[i]` holds the sum of the `i & i.wrapping_neg()` weights ending at `i`.
    tree: Vec<u64>,
    total: u64,
}

impl Fenwick {
    pub(crate) fn from_weights(weights: impl IntoIterator<Item = u64>) -> Self {
        let mut tree = vec![0];
        tree.extend(weights);
        let n = tree.len();
        for i in 1..n {
            let parent = i + (i & i.wrapping_neg());
            if parent < n {
                tree[parent] += tree[i];
            }
        }
        let total = Self::prefix(&tree, n - 1);
        Self { tree, total }
    }

    fn prefix(tree: &[u64], mut i: usize) -> u64 {
        let mut sum = 0;
        while i > 0 {
            sum += tree[i];
            i &= i - 1;
        }
        sum
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Appends a weight at the end.
    pub(crate) fn push(&mut self, weight: u64) {
        let i = self.tree.len();
        let low = i & i.wrapping_neg();
        // node i covers (i - low, i]: the new weight plus the already present (i - low, i - 1]
        let covered = Self::prefix(&self.tree, i - 1) - Self::prefix(&self.tree, i - low);
        self.tree.push(weight + covered);
        self.total += weight;
    }

    /// Replaces weight `pos` (0-based) whose current value is `old` by `new`.
    pub(crate) fn set(&mut self, pos: usize, old: u64, new: u64) {
        let mut i = pos + 1;
        if new >= old {
            let delta = new - old;
            self.total += delta;
            while i < self.tree.len() {
                self.tree[i] += delta;
                i += i & i.wrapping_neg();
            }
        } else {
            let delta = old - new;
            self.total -= delta;
            while i < self.tree.len() {
                self.tree[i] -= delta;
                i += i & i.wrapping_neg();
            }
        }
    }

    /// The 0-based position whose cumulative range holds `target` (`target < total`): the
    /// smallest `pos` with `weight[0] + … + weight[pos] > target`.
    pub(crate) fn find(&self, mut target: u64) -> usize {
        let n = self.tree.len() - 1;
        let mut pos = 0;
        let mut step = if n == 0 { 0 } else { 1 << n.ilog2() };
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] <= target {
                pos = next;
                target -= self.tree[next];
            }
            step >>= 1;
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_set_find_agree_with_a_plain_prefix_sum() {
        let weights = [3u64, 0, 5, 1, 0, 0, 7, 2, 4];
        let mut built = Fenwick::from_weights(weights);
        let mut pushed = Fenwick::from_weights(std::iter::empty());
        for w in weights {
            pushed.push(w);
        }
        assert_eq!(built.tree, pushed.tree);
        built.set(2, 5, 1);
        let weights = [3u64, 0, 1, 1, 0, 0, 7, 2, 4];
        assert_eq!(built.total(), weights.iter().sum::<u64>());
        let mut expected = Vec::new();
        for (pos, w) in weights.iter().enumerate() {
            expected.extend(std::iter::repeat_n(pos, *w as usize));
        }
        let found: Vec<usize> = (0..built.total()).map(|t| built.find(t)).collect();
        assert_eq!(found, expected);
    }
}
