//! The paper's baseline: a uniformly random device, then a uniformly random eligible width of
//! it, then a uniformly random batch size among those the device offers at that width.

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use crate::{eligible_widths, Observation, Route, RouteRequest, Router, RouterSettings};

/// Random placement, seeded.
#[derive(Debug)]
pub struct RandomRouter {
    rng: StdRng,
    batch_size: u16,
}

impl RandomRouter {
    /// A random router seeded from `settings`; `settings.batch_size` is used only for devices
    /// without a profile (no batch options).
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
        let devices: Vec<usize> = observation
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| eligible_widths(d, request).next().is_some())
            .map(|(i, _)| i)
            .collect();
        let device = *devices.choose(&mut self.rng)?;
        let widths: Vec<_> = eligible_widths(&observation.devices[device], request).collect();
        let width = *widths.choose(&mut self.rng)?;
        let batch_size = width
            .batches
            .choose(&mut self.rng)
            .map_or(self.batch_size, |b| b.batch);
        Some(Route {
            device,
            width: width.width,
            batch_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::tests::device;

    #[test]
    fn random_placement_spreads_over_devices_widths_and_batches_and_is_seeded() {
        let obs = Observation {
            devices: vec![device("a", 0), device("b", 0), device("c", 0)],
        };
        let req = RouteRequest::default();
        let mut r = RandomRouter::new(&RouterSettings::default());
        let routes: Vec<Route> = (0..600).map(|_| r.route(&obs, &req).unwrap()).collect();
        for d in 0..3 {
            assert!(routes.iter().filter(|x| x.device == d).count() > 150);
        }
        for w in [0.25, 0.5, 1.0] {
            assert!(routes.iter().filter(|x| x.width == w).count() > 150);
        }
        for b in [1, 4, 16] {
            assert!(routes.iter().filter(|x| x.batch_size == b).count() > 150);
        }
        let mut again = RandomRouter::new(&RouterSettings::default());
        let replay: Vec<Route> = (0..600).map(|_| again.route(&obs, &req).unwrap()).collect();
        assert_eq!(routes, replay);
    }

    #[test]
    fn a_device_without_a_profile_gets_the_configured_batch() {
        let mut bare = device("a", 0);
        bare.widths.iter_mut().for_each(|w| w.batches.clear());
        let obs = Observation {
            devices: vec![bare],
        };
        let route = RandomRouter::new(&RouterSettings::default())
            .route(&obs, &RouteRequest::default())
            .unwrap();
        assert_eq!(route.batch_size, 8);
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
