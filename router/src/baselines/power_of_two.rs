//! Power-of-two-choices: two distinct devices drawn uniformly at random, the one with fewer
//! requests outstanding wins (Mitzenmacher), at the widest eligible width.

use rand::{rngs::StdRng, seq::index::sample, SeedableRng};

use super::{eligible, least_loaded};
use crate::{Observation, Route, RouteRequest, Router, RouterSettings};

/// Power-of-two-choices placement, seeded; a tie goes to the first draw.
#[derive(Debug)]
pub struct PowerOfTwoRouter {
    rng: StdRng,
    batch_size: u16,
}

impl PowerOfTwoRouter {
    /// A power-of-two-choices router seeded from `settings`.
    pub fn new(settings: &RouterSettings) -> Self {
        Self {
            rng: StdRng::seed_from_u64(settings.seed),
            batch_size: settings.batch_size,
        }
    }
}

impl Router for PowerOfTwoRouter {
    fn name(&self) -> &str {
        "power-of-two-choices"
    }

    fn route(&mut self, observation: &Observation, request: &RouteRequest) -> Option<Route> {
        let candidates: Vec<_> = eligible(observation, request).collect();
        let draws = sample(&mut self.rng, candidates.len(), candidates.len().min(2));
        let queue = |d: &crate::DeviceView| f64::from(d.outstanding);
        least_loaded(draws.iter().map(|i| candidates[i]), queue, self.batch_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::tests::device;

    #[test]
    fn of_two_draws_the_shorter_queue_wins() {
        // Device 2 has the longest queue: it can win only when drawn with itself, never.
        let obs = Observation {
            devices: vec![device("a", 1), device("b", 2), device("c", 9)],
        };
        let mut r = PowerOfTwoRouter::new(&RouterSettings::default());
        let req = RouteRequest::default();
        let picks: Vec<usize> = (0..300)
            .map(|_| r.route(&obs, &req).unwrap().device)
            .collect();
        assert!(!picks.contains(&2));
        // Device 1 wins only when drawn with device 2: about a third of the time.
        let ones = picks.iter().filter(|&&d| d == 1).count();
        assert!((60..140).contains(&ones), "{ones}");
    }

    #[test]
    fn one_eligible_device_is_chosen_and_none_gives_none() {
        let obs = Observation {
            devices: vec![device("a", 4)],
        };
        let mut r = PowerOfTwoRouter::new(&RouterSettings::default());
        assert_eq!(r.route(&obs, &RouteRequest::default()).unwrap().device, 0);
        let empty = Observation::default();
        assert_eq!(r.route(&empty, &RouteRequest::default()), None);
    }
}
