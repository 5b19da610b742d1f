//! Join-shortest-queue: the device with the fewest requests assigned and not yet answered
//! (its queue plus what it runs), at the widest eligible width. Unlike least-loaded it ignores
//! how fast each device is.

use super::{eligible, least_loaded};
use crate::{Observation, Route, RouteRequest, Router, RouterSettings};

/// Join-shortest-queue placement; ties go to the lower index.
#[derive(Debug)]
pub struct ShortestQueueRouter {
    batch_size: u16,
}

impl ShortestQueueRouter {
    /// A join-shortest-queue router.
    pub fn new(settings: &RouterSettings) -> Self {
        Self {
            batch_size: settings.batch_size,
        }
    }
}

impl Router for ShortestQueueRouter {
    fn name(&self) -> &str {
        "join-shortest-queue"
    }

    fn route(&mut self, observation: &Observation, request: &RouteRequest) -> Option<Route> {
        let queue = |d: &crate::DeviceView| f64::from(d.outstanding);
        least_loaded(eligible(observation, request), queue, self.batch_size)
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
}
