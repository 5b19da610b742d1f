//! Throughput of the simulator and of PPO decisions, on one core:
//! `cargo bench -p slim-router --bench throughput`.
//!
//! A plain benchmark binary (no criterion, to keep the build small); it prints figures and
//! asserts nothing.

use std::path::Path;
use std::time::Instant;

use slim_router::fleet::Fleet;
use slim_router::ppo::{net::PolicyWeights, Checkpoint, PpoRouter};
use slim_router::reward::RewardPreset;
use slim_router::sim::{Scenario, Simulator};
use slim_router::{build_router, Router, RouterKind, RouterSettings};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let names = Fleet::parse_names("jetson-orin-nano*2,jetson-agx-orin,rtx-4090,cpu-2core");
    let fleet =
        Fleet::load(&root.join("profiles"), &root.join("models"), &names).expect("fleet loads");
    let weights = RewardPreset::Efficiency.weights();

    for kind in [RouterKind::RoundRobin, RouterKind::Greedy] {
        let scenario = Scenario::steady(&fleet, 1_000_000, 0.6);
        let mut router = build_router(kind, &RouterSettings::default()).unwrap();
        let mut sim = Simulator::new(&fleet, &scenario, 1);
        let start = Instant::now();
        let summary = sim.run(router.as_mut(), &weights);
        let secs = start.elapsed().as_secs_f64();
        println!(
            "simulator with {:<12} {:>10.0} requests/s ({} requests in {:.2} s)",
            kind.as_str(),
            summary.completed as f64 / secs,
            summary.completed,
            secs
        );
    }

    // PPO decision speed on observations captured from a busy simulated fleet.
    let policy = root.join("router/policies/efficiency.safetensors");
    let weights_ppo = Checkpoint::load(&policy)
        .map(|c| c.weights)
        .unwrap_or_else(|_| {
            use rand::SeedableRng;
            PolicyWeights::init(32, &mut rand::rngs::StdRng::seed_from_u64(0))
        });
    let mut ppo = PpoRouter::new(weights_ppo);
    let scenario = Scenario::steady(&fleet, 2_000, 0.6);
    let mut sim = Simulator::new(&fleet, &scenario, 2);
    let mut round_robin = build_router(RouterKind::RoundRobin, &RouterSettings::default()).unwrap();
    let mut captured = Vec::new();
    while sim.next_decision() {
        let (o, r) = sim.observation();
        if captured.len() < 1000 {
            captured.push((o.clone(), r.clone()));
        }
        let route = round_robin.route(o, r);
        sim.apply(route);
    }
    let n = 200_000;
    let start = Instant::now();
    let mut chosen = 0usize;
    for i in 0..n {
        let (o, r) = &captured[i % captured.len()];
        chosen += ppo.route(o, r).map_or(0, |r| r.device);
    }
    let secs = start.elapsed().as_secs_f64();
    let candidates: usize = fleet.devices.len() * 4 * 4;
    println!(
        "ppo decisions               {:>10.0} decisions/s ({} devices, up to {} candidates; checksum {})",
        n as f64 / secs,
        fleet.devices.len(),
        candidates,
        chosen
    );
}
