//! The device with the least work outstanding, at the widest eligible width.

use super::{least_loaded_cached, Lightest};
use crate::cached::ScoreCache;
use crate::{Observation, Route, RouteRequest, Router, RouterSettings};

/// Least-loaded placement; ties go to the lower index. Each device's load is kept between
/// requests and looked at again only when the device changed (`router/src/cached.rs`).
#[derive(Debug)]
pub struct LeastLoadedRouter {
    batch_size: u16,
    cache: ScoreCache<Lightest>,
}

impl LeastLoadedRouter {
    /// A least-loaded router.
    pub fn new(settings: &RouterSettings) -> Self {
        Self {
            batch_size: settings.batch_size,
            cache: ScoreCache::default(),
        }
    }
}

impl Router for LeastLoadedRouter {
    fn name(&self) -> &str {
        "least-loaded"
    }

    fn route(&mut self, observation: &Observation, request: &RouteRequest) -> Option<Route> {
        let load = |d: &crate::DeviceView| f64::from(d.outstanding as f32 * d.slowdown.max(1.0));
        least_loaded_cached(&mut self.cache, observation, request, load, self.batch_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::tests::device;

    #[test]
    fn the_device_with_least_outstanding_work_is_chosen() {
        let obs = Observation {
            devices: vec![device("a", 5), device("b", 2), device("c", 9)],
        };
        let mut r = LeastLoadedRouter::new(&RouterSettings::default());
        let route = r.route(&obs, &RouteRequest::default()).unwrap();
        assert_eq!(route.device, 1);
        assert_eq!(route.width, 1.0);
    }

    #[test]
    fn a_slowed_device_counts_its_queue_as_longer() {
        let mut slow = device("slow", 2);
        slow.slowdown = 4.0;
        let obs = Observation {
            devices: vec![slow, device("fast", 5)],
        };
        let mut r = LeastLoadedRouter::new(&RouterSettings::default());
        assert_eq!(r.route(&obs, &RouteRequest::default()).unwrap().device, 1);
    }

    #[test]
    fn the_cached_loads_pick_what_the_full_scan_picks() {
        let settings = RouterSettings::default();
        let mut full = LeastLoadedRouter::new(&settings);
        let mut cached = LeastLoadedRouter::new(&settings);
        crate::cached::tests::compare(&mut cached, &mut full, |r| r.cache.rescored());
    }
}
