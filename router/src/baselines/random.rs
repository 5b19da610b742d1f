//! The paper's baseline: a uniformly random device and a uniformly random eligible width.

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use crate::{eligible_widths, Observation, Route, RouteRequest, Router, RouterSettings};

/// Random placement, seeded.
#[derive(Debug)]
pub struct RandomRouter {
    rng: StdRng,
    batch_size: u16,
}

impl RandomRouter {
    /// A random router seeded from `settings`.
    pub fn new(settings: &RouterSettings) -> Self {
        Self {
            rng: StdRng::seed_from_u64(settings.seed),
            batch_size: settings.batch_size,
        }
    }
}

impl Router for RandomRouter {
    fn name(&self) -> &str {
        "random"
    }

    fn route(&mut self, observation: &Observation, request: &RouteRequest) -> Option<Route> {
        let options: Vec<(usize, f32)> = observation
            .devices
            .iter()
            .enumerate()
            .flat_map(|(i, d)| eligible_widths(d, request).map(move |w| (i, w.width)))
            .collect();
        let devices: Vec<usize> = {
            let mut d: Vec<usize> = options.iter().map(|(i, _)| *i).collect();
            d.dedup();
            d
        };
        let device = *devices.choose(&mut self.rng)?;
        let widths: Vec<f32> = options
            .iter()
            .filter(|(i, _)| *i == device)
            .map(|(_, w)| *w)
            .collect();
        let width = *widths.choose(&mut self.rng)?;
        Some(Route {
            device,
            width,
            batch_size: self.batch_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::tests::device;

    #[test]
    fn random_placement_spreads_over_devices_and_widths_and_is_seeded() {
        let obs = Observation {
            devices: vec![device("a", 0), device("b", 0), device("c", 0)],
        };
        let req = RouteRequest::default();
        let mut r = RandomRouter::new(&RouterSettings::default());
        let routes: Vec<Route> = (0..300).map(|_| r.route(&obs, &req).unwrap()).collect();
        for d in 0..3 {
            assert!(routes.iter().filter(|x| x.device == d).count() > 50);
        }
        for w in [0.25, 0.5, 1.0] {
            assert!(routes.iter().filter(|x| x.width == w).count() > 50);
        }
        let mut again = RandomRouter::new(&RouterSettings::default());
        let replay: Vec<Route> = (0..300).map(|_| again.route(&obs, &req).unwrap()).collect();
        assert_eq!(routes, replay);
    }

    #[test]
    fn nothing_is_routed_when_no_width_meets_the_floor() {
        let obs = Observation {
            devices: vec![device("a", 0)],
        };
        let req = RouteRequest {
            min_accuracy: Some(0.999),
            ..Default::default()
        };
        assert_eq!(
            RandomRouter::new(&RouterSettings::default()).route(&obs, &req),
            None
        );
    }
}
