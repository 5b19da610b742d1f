//! Devices in turn, at the widest eligible width.

use super::widest;
use crate::{Observation, Route, RouteRequest, Router, RouterSettings};

/// Round-robin over the devices that can serve the request.
#[derive(Debug)]
pub struct RoundRobinRouter {
    next: usize,
    batch_size: u16,
}

impl RoundRobinRouter {
    /// A round-robin router.
    pub fn new(settings: &RouterSettings) -> Self {
        Self {
            next: 0,
            batch_size: settings.batch_size,
        }
    }
}

impl Router for RoundRobinRouter {
    fn name(&self) -> &str {
        "round-robin"
    }

    fn route(&mut self, observation: &Observation, request: &RouteRequest) -> Option<Route> {
        let n = observation.devices.len();
        (0..n).find_map(|offset| {
            let device = (self.next + offset) % n;
            let width = widest(&observation.devices[device], request)?;
            self.next = device + 1;
            Some(Route {
                device,
                width: width.width,
                batch_size: self.batch_size,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::tests::device;

    #[test]
    fn devices_take_turns_at_the_widest_width() {
        let obs = Observation {
            devices: vec![device("a", 0), device("b", 0)],
        };
        let mut r = RoundRobinRouter::new(&RouterSettings::default());
        let req = RouteRequest::default();
        let picks: Vec<usize> = (0..4)
            .map(|_| r.route(&obs, &req).unwrap().device)
            .collect();
        assert_eq!(picks, vec![0, 1, 0, 1]);
        assert_eq!(r.route(&obs, &req).unwrap().width, 1.0);
    }
}
