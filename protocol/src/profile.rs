//! Reading a [`DeviceProfile`]: the latency and power of any batch size, and the profile of a
//! device some factor slower. Routers predict with it; an agent that emulates a device paces
//! its batches to it.

use crate::{DeviceProfile, ProfilePoint, WidthKey};

impl DeviceProfile {
    /// Latency (ms) and power (W) of one batch of `batch` at `width` of `model`, interpolated
    /// linearly between profiled batch sizes and extrapolated along the last segment. `None`
    /// when the profile has no point for that model and width.
    pub fn cost(&self, model: &str, width: f32, batch: u16) -> Option<(f32, f32)> {
        let mut points: Vec<&ProfilePoint> = self
            .points
            .iter()
            .filter(|p| p.model == model && WidthKey::same(p.width, width))
            .collect();
        if points.is_empty() {
            return None;
        }
        points.sort_by_key(|p| p.batch);
        let power = |p: &ProfilePoint| p.power_w.unwrap_or(self.max_power_w);
        let b = f32::from(batch);
        let (lo, hi) = match points.iter().position(|p| p.batch >= batch) {
            Some(0) => return Some((points[0].latency_ms, power(points[0]))),
            Some(i) => (points[i - 1], points[i]),
            None if points.len() == 1 => {
                let p = points[0];
                return Some((p.latency_ms * b / f32::from(p.batch.max(1)), power(p)));
            }
            None => (points[points.len() - 2], points[points.len() - 1]),
        };
        let t = (b - f32::from(lo.batch)) / (f32::from(hi.batch) - f32::from(lo.batch)).max(1.0);
        let latency = lo.latency_ms + t * (hi.latency_ms - lo.latency_ms);
        let watts = (power(lo) + t * (power(hi) - power(lo)))
            .clamp(self.idle_power_w, self.max_power_w.max(self.idle_power_w));
        Some((latency.max(1e-4), watts))
    }

    /// The same device `factor` times slower: every latency multiplied, power unchanged (so a
    /// batch also takes `factor` times the energy). `factor` 1 returns the profile as it is.
    pub fn slowed(&self, factor: f32) -> DeviceProfile {
        let mut out = self.clone();
        if factor != 1.0 {
            for point in &mut out.points {
                point.latency_ms *= factor;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(width: f32, batch: u16, latency_ms: f32, power_w: f32) -> ProfilePoint {
        ProfilePoint {
            model: "m".into(),
            width,
            batch,
            latency_ms,
            power_w: Some(power_w),
        }
    }

    fn profile() -> DeviceProfile {
        DeviceProfile {
            name: "p".into(),
            source: "derived".into(),
            idle_power_w: 2.0,
            max_power_w: 20.0,
            points: vec![
                point(1.0, 16, 8.0, 18.0),
                point(1.0, 1, 1.0, 5.0),
                point(1.0, 4, 2.0, 10.0),
                point(1.0, 32, 12.0, 20.0),
                point(0.5, 1, 0.5, 4.0),
            ],
        }
    }

    #[test]
    fn cost_interpolates_between_batch_sizes_and_extrapolates_past_the_last() {
        let p = profile();
        assert_eq!(p.cost("m", 1.0, 4), Some((2.0, 10.0)));
        let (l10, w10) = p.cost("m", 1.0, 10).unwrap();
        assert!((l10 - 5.0).abs() < 1e-4, "{l10}");
        assert!((w10 - 14.0).abs() < 1e-4, "{w10}");
        let (l64, w64) = p.cost("m", 1.0, 64).unwrap();
        assert!((l64 - 20.0).abs() < 1e-4, "{l64}");
        assert_eq!(w64, 20.0, "power is clamped to the device's maximum");
    }

    #[test]
    fn cost_of_a_lone_point_scales_with_the_batch() {
        let (l, _) = profile().cost("m", 0.5, 4).unwrap();
        assert!((l - 2.0).abs() < 1e-4, "{l}");
    }

    #[test]
    fn cost_is_none_for_an_unprofiled_width_or_model() {
        assert_eq!(profile().cost("m", 0.75, 1), None);
        assert_eq!(profile().cost("other", 1.0, 1), None);
    }

    #[test]
    fn a_slowed_profile_multiplies_latency_and_keeps_power() {
        let slow = profile().slowed(10.0);
        assert_eq!(slow.cost("m", 1.0, 4), Some((20.0, 10.0)));
        assert_eq!(profile().slowed(1.0), profile());
    }
}
