//! From logits to the top-k classes a client receives.

use slim_protocol::ClassScore;

/// Softmax over `logits`, then the `k` best classes, best first.
pub fn top_k(logits: &[f32], labels: &[String], k: usize) -> Vec<ClassScore> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| exps[b].total_cmp(&exps[a]));
    order
        .into_iter()
        .take(k)
        .map(|class| ClassScore {
            class: class as u32,
            label: labels
                .get(class)
                .cloned()
                .unwrap_or_else(|| class.to_string()),
            score: exps[class] / sum,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_returns_the_most_likely_classes_with_probabilities() {
        let labels: Vec<String> = ["cat", "dog", "eel"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let top = top_k(&[1.0, 3.0, 2.0], &labels, 2);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].label, "dog");
        assert_eq!(top[1].class, 2);
        let total: f32 = top_k(&[1.0, 3.0, 2.0], &labels, 3)
            .iter()
            .map(|c| c.score)
            .sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(top[0].score > top[1].score);
    }
}
