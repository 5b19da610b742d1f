//! Join-shortest-queue: the device with the fewest requests assigned and not yet answered
//! (its queue plus what it runs), at the widest eligible width. Unlike least-loaded it ignores
//! how fast each device is.

use super::{least_loaded_cached, Lightest};
use crate::cached::ScoreCache;
use crate::{Observation, Route, RouteRequest, Router, RouterSettings};

/// Join-shortest-queue placement; ties go to the lower index. Each device's queue is kept
/// between requests and looked at again only when the device changed (`router/src/cached.rs`).
#[derive(Debug)]
pub struct ShortestQueueRouter {
    batch_size: u16,
    cache: ScoreCache<Lightest>,
}

impl ShortestQueueRouter {
    /// A join-shortest-queue router.
    pub fn new(settings: &RouterSettings) -> Self {
        Self {
            batch_size: settings.batch_size,
            cache: ScoreCache::default(),
        }
    }
}

impl Router for ShortestQueueRouter {
    fn name(&self) -> &str {
        "join-shortest-queue"
    }

    fn route(&mut self, observation: &Observation, request: &RouteRequest) -> Option<Route> {
        let queue = |d: &crate::DeviceView| f64::from(d.outstanding);
        least_loaded_cached(
            &mut self.cache,
            observation,
            request,
            queue,
            self.batch_size,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::tests::device;

    #[test]
    fn the_shortest_queue_wins_whatever_the_device_speed() {
        let mut slow = device("slow", 1);
        slow.slowdown = 8.0;
        let obs = Observation {
            devices: vec![device("a", 3), slow, device("c", 1)],
        };
        let route = ShortestQueueRouter::new(&RouterSettings::default())
            .route(&obs, &RouteRequest::default())
            .unwrap();
        assert_eq!((route.device, route.width, route.batch_size), (1, 1.0, 8));
    }

    #[test]
    fn an_offline_device_is_skipped() {
        let mut off = device("off", 0);
        off.online = false;
        let obs = Observation {
            devices: vec![off, device("b", 5)],
        };
        let route = ShortestQueueRouter::new(&RouterSettings::default())
            .route(&obs, &RouteRequest::default())
            .unwrap();
        assert_eq!(route.device, 1);
    }

    #[test]
    fn the_cached_queues_pick_what_the_full_scan_picks() {
        let settings = RouterSettings::default();
        let mut full = ShortestQueueRouter::new(&settings);
        let mut cached = ShortestQueueRouter::new(&settings);
        crate::cached::tests::compare(&mut cached, &mut full, |r| r.cache.rescored());
    }
}
