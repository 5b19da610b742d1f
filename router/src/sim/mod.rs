//! A seeded discrete-event model of the cluster, driven through the same [`Router`](crate::Router)
//! interface as the live coordinator.
//!
//! [`Scenario`] says what happens (arrivals, fleet events); [`Simulator`] plays it on a
//! [`Fleet`](crate::fleet::Fleet): a queue per (model, width) on each device, greedy batching up
//! to the routed batch size within a maximum queue delay, instance and memory limits, and
//! latency and power per width × batch from the device profiles. [`Summary`] holds the results.

mod engine;
mod meter;
mod reported;
mod scenario;
mod summary;

pub use engine::{Completion, Simulator};
pub use meter::PowerMeter;
pub use scenario::{fleet_capacity_per_s, Burst, FleetEvent, FleetEventKind, RateStep, Scenario};
pub use summary::{RequestRecord, Summary};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::tests::tiny_fleet;
    use crate::reward::RewardPreset;
    use crate::{build_router, RouterKind, RouterSettings};

    fn eventful(fleet: &crate::fleet::Fleet) -> Scenario {
        let mut s = Scenario::steady(fleet, 3000, 0.7);
        s.burst = Some(Burst {
            factor: 3.0,
            mean_on_ms: 50.0,
            mean_off_ms: 200.0,
        });
        s.step = Some(RateStep {
            at_ms: 300.0,
            factor: 1.5,
        });
        s.events = vec![
            FleetEvent {
                at_ms: 100.0,
                device: 2,
                kind: FleetEventKind::Slowdown(4.0),
            },
            FleetEvent {
                at_ms: 200.0,
                device: 0,
                kind: FleetEventKind::Leave,
            },
            FleetEvent {
                at_ms: 400.0,
                device: 0,
                kind: FleetEventKind::Join,
            },
        ];
        s
    }

    #[test]
    fn the_same_seed_replays_the_same_run_and_another_seed_does_not() {
        let fleet = tiny_fleet();
        let scenario = eventful(&fleet);
        let run = |seed| {
            let mut router = build_router(RouterKind::Random, &RouterSettings::default()).unwrap();
            let mut sim = Simulator::new(&fleet, &scenario, seed);
            sim.run(router.as_mut(), &RewardPreset::Balanced.weights());
            sim.records().to_vec()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn a_calibrated_transport_delay_adds_to_every_latency_and_nothing_else() {
        let plain = tiny_fleet();
        let mut calibrated = plain.clone();
        // every request spends exactly 7 ms outside the devices
        calibrated.transport = crate::calibration::Transport::from_samples(&[7.0]);
        let scenario = Scenario::steady(&plain, 500, 0.3);
        let run = |fleet: &crate::fleet::Fleet| {
            let mut router = build_router(RouterKind::Greedy, &RouterSettings::default()).unwrap();
            let mut sim = Simulator::new(fleet, &scenario, 11);
            sim.run(router.as_mut(), &RewardPreset::Balanced.weights());
            sim.records().to_vec()
        };
        let (a, b) = (run(&plain), run(&calibrated));
        assert_eq!(a.len(), 500);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.device, x.width, x.batch), (y.device, y.width, y.batch));
            assert!((y.outcome.latency_ms - x.outcome.latency_ms - 7.0).abs() < 1e-3);
        }
    }

    #[test]
    fn with_a_telemetry_interval_routers_see_stale_load_and_spread_the_work() {
        let exact = tiny_fleet();
        let mut reported = exact.clone();
        reported.telemetry_interval_ms = Some(1000.0);
        let scenario = Scenario::steady(&exact, 2000, 0.05);
        let shares = |fleet: &crate::fleet::Fleet| {
            let mut router =
                build_router(RouterKind::LeastLoaded, &RouterSettings::default()).unwrap();
            let mut sim = Simulator::new(fleet, &scenario, 4);
            sim.run(router.as_mut(), &RewardPreset::Balanced.weights());
            let mut n = vec![0usize; fleet.devices.len()];
            for r in sim.records() {
                n[usize::from(r.device)] += 1;
            }
            assert_eq!(n.iter().sum::<usize>(), 2000);
            n
        };
        let (a, b) = (shares(&exact), shares(&reported));
        // light load: with exact state, one idle device takes nearly everything; a coordinator
        // that hears of completions only once a second counts every assignment as still
        // outstanding and so spreads them
        let max = |n: &[usize]| *n.iter().max().unwrap();
        assert!(max(&a) > 1600, "exact: {a:?}");
        assert!(max(&b) < 1000, "reported: {b:?}");
    }

    /// Per decision: the observation's arrival rate, and the largest (model, width) queue and
    /// oldest wait of any device, for a run of `fleet` at 3x its capacity routed by greedy.
    fn queue_views(fleet: &crate::fleet::Fleet) -> Vec<(f32, u32, f32)> {
        let scenario = Scenario::steady(fleet, 2000, 3.0);
        let mut router = build_router(RouterKind::Greedy, &RouterSettings::default()).unwrap();
        let mut sim = Simulator::new(fleet, &scenario, 2);
        let mut seen = Vec::new();
        while sim.next_decision() {
            let (observation, request) = sim.observation();
            let rates: Vec<f32> = observation
                .devices
                .iter()
                .map(|d| d.arrival_rate_per_s)
                .collect();
            assert!(rates.iter().all(|&r| r == rates[0] && r.is_finite()));
            let widths = observation.devices.iter().flat_map(|d| &d.widths);
            let depth = widths.clone().map(|w| w.queue_depth).max().unwrap_or(0);
            let wait = widths.map(|w| w.oldest_wait_ms).fold(0.0f32, f32::max);
            for d in &observation.devices {
                let per_width: u32 = d.widths.iter().map(|w| w.queue_depth).sum();
                assert!(
                    per_width <= d.queue_depth,
                    "the widths' queues are part of the device's"
                );
            }
            seen.push((rates[0], depth, wait));
            let route = router.route(observation, request);
            sim.apply(route);
        }
        seen
    }

    #[test]
    fn the_simulator_fills_the_queue_timer_and_arrival_rate_of_each_view() {
        let fleet = tiny_fleet();
        let exact = queue_views(&fleet);
        assert_eq!(exact[0], (0.0, 0, 0.0), "nothing has arrived yet");
        assert!(exact
            .iter()
            .any(|&(_, depth, wait)| depth > 0 && wait > 0.0));
        // The estimate follows the offered rate (per model; two models share it equally).
        let scenario = Scenario::steady(&fleet, 2000, 3.0);
        let per_model = scenario.rate_per_s as f32 / fleet.models.len() as f32;
        let late = &exact[exact.len() / 2..];
        let mean = late.iter().map(|s| s.0).sum::<f32>() / late.len() as f32;
        assert!(
            (mean / per_model - 1.0).abs() < 0.3,
            "{mean} requests/s estimated, {per_model} offered"
        );
        // With a telemetry interval the queues are those of the latest report: they change
        // less often than the exact ones.
        let mut reported = fleet.clone();
        reported.telemetry_interval_ms = Some(20.0);
        let stale = queue_views(&reported);
        assert!(stale.iter().any(|&(_, depth, _)| depth > 0));
        let changes = |v: &[(f32, u32, f32)]| v.windows(2).filter(|w| w[0].1 != w[1].1).count();
        assert!(
            changes(&stale) < changes(&exact),
            "{} vs {}",
            changes(&stale),
            changes(&exact)
        );
    }

    #[test]
    fn every_request_finishes_exactly_once_even_when_a_device_leaves() {
        let fleet = tiny_fleet();
        let scenario = eventful(&fleet);
        for kind in [
            RouterKind::Random,
            RouterKind::RoundRobin,
            RouterKind::LeastLoaded,
            RouterKind::Greedy,
        ] {
            let mut router = build_router(kind, &RouterSettings::default()).unwrap();
            let mut sim = Simulator::new(&fleet, &scenario, 3);
            let summary = sim.run(router.as_mut(), &RewardPreset::Balanced.weights());
            assert_eq!(summary.arrived, 3000);
            assert_eq!(
                summary.completed + summary.dropped,
                summary.arrived,
                "{kind:?}"
            );
            assert_eq!(summary.dropped, 0, "{kind:?}");
            assert!(
                summary.rerouted > 0,
                "{kind:?}: the leave event orphaned nothing"
            );
            assert!(summary.mean_latency_ms > 0.0 && summary.mean_energy_mj > 0.0);
        }
    }

    #[test]
    fn fleet_energy_counts_idle_devices_and_stays_within_idle_and_max_power() {
        let fleet = tiny_fleet();
        let scenario = eventful(&fleet); // device 0 is away from 200 to 400 ms
        let mut router = build_router(RouterKind::Greedy, &RouterSettings::default()).unwrap();
        let mut sim = Simulator::new(&fleet, &scenario, 5);
        let summary = sim.run(router.as_mut(), &RewardPreset::Balanced.weights());
        let t = summary.duration_ms;
        assert!(t > 400.0, "the run covers the fleet events: {t} ms");
        let away = |d: usize| if d == 0 { 200.0 } else { 0.0 };
        let bound = |power: &dyn Fn(usize) -> f32| -> f64 {
            (0..fleet.devices.len())
                .map(|d| f64::from(power(d)) * (t - away(d)))
                .sum()
        };
        let idle = bound(&|d| fleet.devices[d].profile.idle_power_w);
        let max = bound(&|d| {
            let p = &fleet.devices[d].profile;
            p.max_power_w.max(p.idle_power_w)
        });
        let energy = sim.fleet_energy_mj();
        assert!(
            energy > idle,
            "{energy} mJ must exceed idle alone ({idle} mJ)"
        );
        assert!(
            energy <= max * (1.0 + 1e-9),
            "{energy} mJ above max power ({max} mJ)"
        );
        let per_request = energy / summary.completed as f64;
        assert!((summary.fleet_energy_per_request_mj - per_request).abs() < 1e-6);
    }

    #[test]
    fn every_decision_is_credited_once_even_when_its_request_is_placed_again() {
        let fleet = tiny_fleet();
        let scenario = eventful(&fleet);
        let mut router = build_router(RouterKind::Random, &RouterSettings::default()).unwrap();
        let mut sim = Simulator::new(&fleet, &scenario, 3);
        let mut credited: Vec<u32> = Vec::new();
        let mut latency_of: Vec<f32> = Vec::new();
        loop {
            let more = sim.next_decision();
            for c in sim.drain_completions() {
                credited[c.decision as usize] += 1;
                latency_of[c.decision as usize] = c.outcome.latency_ms;
            }
            if !more {
                break;
            }
            let (observation, request) = sim.observation();
            let route = router.route(observation, request);
            credited.push(0);
            latency_of.push(0.0);
            sim.apply(route);
        }
        let summary = sim.summary(&RewardPreset::Balanced.weights());
        assert!(summary.rerouted > 0);
        assert_eq!(credited.len(), summary.arrived + summary.rerouted);
        // No decision is left with the best possible reward (none at all): each gets the cost of
        // what finally happened to its request, including the time lost to the re-placement.
        assert!(credited.iter().all(|&n| n == 1), "{credited:?}");
        assert!(latency_of.iter().all(|&l| l > 0.0));
    }

    #[test]
    fn a_slimmer_width_costs_less_latency_and_energy_than_a_wider_one() {
        let fleet = tiny_fleet();
        let scenario = Scenario::steady(&fleet, 2000, 0.5);
        let pinned = |width: f32| {
            struct Pin(f32);
            impl crate::Router for Pin {
                fn name(&self) -> &str {
                    "pin"
                }
                fn route(
                    &mut self,
                    o: &crate::Observation,
                    _: &crate::RouteRequest,
                ) -> Option<crate::Route> {
                    let w = o.devices[0]
                        .widths
                        .iter()
                        .find(|w| w.width == self.0)
                        .or(o.devices[0].widths.last())?;
                    Some(crate::Route {
                        device: 0,
                        width: w.width,
                        batch_size: 4,
                    })
                }
            }
            Simulator::new(&fleet, &scenario, 1)
                .run(&mut Pin(width), &RewardPreset::Balanced.weights())
        };
        let (slim, wide) = (pinned(0.5), pinned(1.0));
        assert!(slim.mean_latency_ms < wide.mean_latency_ms);
        assert!(slim.mean_energy_mj < wide.mean_energy_mj);
        assert!(slim.mean_accuracy < wide.mean_accuracy);
    }
}
