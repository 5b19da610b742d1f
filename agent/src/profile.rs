//! Measuring a device: latency of every width × batch size of a family, on the chosen backend.
//! `slim profile` writes the result as a [`DeviceProfile`]; `slim models` prints it.

use std::time::{Duration, Instant};

use slim_protocol::{DeviceProfile, ProfilePoint};

use crate::model::{ModelError, ModelFamily};

/// How long to measure each point.
#[derive(Debug, Clone)]
pub struct ProfileSettings {
    /// Batch sizes to measure.
    pub batches: Vec<u16>,
    /// Runs discarded before timing.
    pub warmup: usize,
    /// Least number of timed runs.
    pub min_runs: usize,
    /// Stop timing a point after this long (once `min_runs` are done).
    pub budget: Duration,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        Self {
            batches: vec![1, 2, 4, 8, 16, 32],
            warmup: 2,
            min_runs: 5,
            budget: Duration::from_millis(300),
        }
    }
}

/// One measured point with its spread.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The point (mean latency).
    pub point: ProfilePoint,
    /// Median batch latency, ms.
    pub median_ms: f32,
    /// Timed runs.
    pub runs: usize,
}

/// Measures every width of `family` at every batch size; calls `progress` after each point.
pub fn measure_family(
    family: &ModelFamily,
    settings: &ProfileSettings,
    mut progress: impl FnMut(&Measured),
) -> Result<Vec<Measured>, ModelError> {
    let mut out = Vec::new();
    let sample = vec![0.1f32; family.sample_len()];
    for plan in family.plans() {
        let mut state = plan.spawn_instance()?;
        for &batch in &settings.batches {
            let samples = vec![sample.clone(); batch as usize];
            for _ in 0..settings.warmup {
                family.run_batch(&mut state, &samples)?;
            }
            let mut times = Vec::new();
            let started = Instant::now();
            while times.len() < settings.min_runs || started.elapsed() < settings.budget {
                let t = Instant::now();
                family.run_batch(&mut state, &samples)?;
                times.push(t.elapsed().as_secs_f32() * 1000.0);
                if times.len() >= 10_000 {
                    break;
                }
            }
            let mean = times.iter().sum::<f32>() / times.len() as f32;
            times.sort_by(f32::total_cmp);
            let m = Measured {
                point: ProfilePoint {
                    model: family.name().to_string(),
                    width: plan.entry.width,
                    batch,
                    latency_ms: mean,
                    power_w: None,
                },
                median_ms: times[times.len() / 2],
                runs: times.len(),
            };
            progress(&m);
            out.push(m);
        }
    }
    Ok(out)
}

/// A profile from measured points, with the power model's idle and full-load figures.
pub fn to_profile(name: &str, points: Vec<ProfilePoint>, idle_w: f32, max_w: f32) -> DeviceProfile {
    DeviceProfile {
        name: name.to_string(),
        source: "measured".into(),
        idle_power_w: idle_w,
        max_power_w: max_w,
        points,
    }
}
