//! Per-decision cost of every router against the fleet's size, as the coordinator drives them:
//! `cargo bench --profile dev --workspace --bench fleet_scale` (the dev profile is the one
//! `slim bench --saturate` runs; `cargo bench --workspace --bench fleet_scale` for release).
//!
//! The observation is what the coordinator builds for `slim bench --saturate`'s emulated
//! agents: N devices serving `digits` with the `cpu-2core-measured` profile (4 widths × 6 batch
//! sizes = 24 candidates each), versioned as `ClusterState` versions them. Between decisions it
//! changes as in that benchmark: the chosen device gets one more request outstanding (a new
//! version), and telemetry (every agent every 200 ms, taken at 10 000 decisions/s, so N / 2000
//! reports per decision) sets a device's outstanding count back to 0 (a new version).
//! "full scan" rows give every device version 0 (not tracked), so the routers score every
//! device on every request: the path the simulator takes, and the only one before the cache.
//! "ppo, full scan, one by one" also runs the network one candidate at a time: PPO's decision
//! before both changes. Prints a Markdown table (µs per decision and the ratio of 500 to 5
//! devices); asserts nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use slim_router::fleet::{ModelSpec, ProfileFile};
use slim_router::ppo::features::Candidates;
use slim_router::ppo::net::{PolicyWeights, Scratch};
use slim_router::ppo::{argmax, Checkpoint, PpoRouter};
use slim_router::{
    build_router, BatchOption, DeviceView, Observation, Route, RouteRequest, Router, RouterKind,
    RouterSettings, WidthOption,
};

const FLEETS: [usize; 3] = [5, 50, 500];

/// The coordinator's view of `n` emulated agents.
fn observation(n: usize, profile: &ProfileFile, model: &ModelSpec) -> Observation {
    let widths: Vec<WidthOption> = model
        .widths
        .iter()
        .map(|w| {
            let mut batches: Vec<BatchOption> = profile
                .profile
                .points
                .iter()
                .filter(|p| p.model == model.name && (p.width - w.width).abs() < 1e-3)
                .map(|p| BatchOption {
                    batch: p.batch,
                    latency_ms: p.latency_ms,
                    power_w: p.power_w.unwrap_or(profile.profile.max_power_w),
                    mem_bytes: 0,
                })
                .collect();
            batches.sort_by_key(|b| b.batch);
            WidthOption {
                width: w.width,
                top1: w.top1,
                flops: w.flops,
                recent_latency_ms: None,
                queue_depth: 0,
                oldest_wait_ms: 0.0,
                batches,
            }
        })
        .collect();
    let devices = (0..n)
        .map(|i| DeviceView {
            agent: format!("emulated-{i}"),
            online: true,
            outstanding: 0,
            queue_depth: 0,
            backlog_ms: 0.0,
            instances: 1,
            cpu_util: 0.0,
            gpu_util: None,
            mem_free_bytes: 1 << 30,
            power_w: 0.0,
            max_batch: 32,
            slowdown: 1.0,
            widths: widths.clone(),
            version: i as u64 + 1,
            arrival_rate_per_s: 0.0,
        })
        .collect();
    Observation { devices }
}

/// Routes on `observation`, changing it as the coordinator would, for about `budget`; µs per
/// decision and a checksum of the picks.
fn time(
    route: &mut dyn FnMut(&Observation, &RouteRequest) -> Option<Route>,
    mut observation: Observation,
    tracked: bool,
    budget: Duration,
) -> (f64, usize) {
    let request = RouteRequest {
        model: "digits".into(),
        ..Default::default()
    };
    let n = observation.devices.len();
    let mut last = n as u64;
    let mut stamp = |d: &mut DeviceView| {
        last += 1;
        d.version = if tracked { last } else { 0 };
    };
    if !tracked {
        observation.devices.iter_mut().for_each(&mut stamp);
    }
    let reports_per_decision = n as f64 / 2000.0;
    let (mut reports, mut next_report) = (0.0f64, 0usize);
    let (mut decisions, mut checksum) = (0u64, 0usize);
    let start = Instant::now();
    while decisions < 10 || (start.elapsed() < budget && decisions < 2_000_000) {
        let Some(chosen) = route(&observation, &request) else {
            panic!("every device can take a digits request");
        };
        checksum = checksum.wrapping_mul(31).wrapping_add(chosen.device);
        let d = &mut observation.devices[chosen.device];
        d.outstanding += 1;
        stamp(d);
        reports += reports_per_decision;
        while reports >= 1.0 {
            reports -= 1.0;
            let d = &mut observation.devices[next_report % n];
            d.outstanding = 0;
            stamp(d);
            next_report += 1;
        }
        decisions += 1;
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / decisions as f64;
    (us, checksum)
}

/// PPO's decision before this bench's changes: every candidate, one at a time.
struct OneByOne {
    weights: PolicyWeights,
    candidates: Candidates,
    logits: Vec<f32>,
    scratch: Scratch,
}

impl OneByOne {
    fn route(&mut self, observation: &Observation, request: &RouteRequest) -> Option<Route> {
        self.candidates.fill(observation, request);
        let n = self.candidates.len();
        if n == 0 {
            return None;
        }
        self.weights.logits_one_by_one(
            &self.candidates.features,
            n,
            &mut self.logits,
            &mut self.scratch,
        );
        let (pick, _) = argmax(&self.logits);
        Some(self.candidates.routes[pick])
    }
}

/// What every row is measured on: the profile and model the emulated agents serve, and the
/// time budget per fleet size.
struct Setup {
    profile: ProfileFile,
    model: ModelSpec,
    budget: Duration,
}

impl Setup {
    /// Loads the measured profile, the digits manifest and `SLIM_BENCH_MS` (default 400 ms).
    fn load(root: &Path) -> Self {
        let profile = ProfileFile::load(&root.join("profiles/cpu-2core-measured.toml"))
            .expect("the measured profile loads");
        let model =
            ModelSpec::load(&root.join("models/digits/manifest.toml")).expect("digits manifest");
        let budget = Duration::from_millis(
            std::env::var("SLIM_BENCH_MS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(400),
        );
        Self {
            profile,
            model,
            budget,
        }
    }

    /// µs per decision on each of `FLEETS`, with a fresh router from `make` for each.
    fn costs(&self, make: &mut dyn FnMut() -> Box<dyn Router>, tracked: bool) -> Vec<f64> {
        let mut costs = Vec::new();
        for n in FLEETS {
            let mut router = make();
            let mut route = |o: &Observation, r: &RouteRequest| router.route(o, r);
            let (us, _) = time(
                &mut route,
                observation(n, &self.profile, &self.model),
                tracked,
                self.budget,
            );
            costs.push(us);
        }
        costs
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let setup = Setup::load(&root);
    let checkpoint = Checkpoint::load(&root.join("router/policies/efficiency.safetensors"))
        .expect("the efficiency policy loads");
    let mut rows = router_rows(&setup, &checkpoint);
    rows.push(one_by_one_row(&setup, &checkpoint));
    print_table(&rows);
}

/// Every router, on a tracked observation; those that skip unchanged devices also on a full
/// scan.
fn router_rows(setup: &Setup, checkpoint: &Checkpoint) -> Vec<(String, Vec<f64>)> {
    let settings = RouterSettings::default();
    let routers = [
        RouterKind::Random,
        RouterKind::RoundRobin,
        RouterKind::LeastLoaded,
        RouterKind::JoinShortestQueue,
        RouterKind::PowerOfTwoChoices,
        RouterKind::Greedy,
        RouterKind::Ppo,
    ];
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    let mut run = |name: String, make: &mut dyn FnMut() -> Box<dyn Router>, tracked: bool| {
        let costs = setup.costs(make, tracked);
        eprintln!("{name}: {costs:.2?}");
        rows.push((name, costs));
    };
    for kind in routers {
        let mut make = || -> Box<dyn Router> {
            match kind {
                RouterKind::Ppo => Box::new(PpoRouter::new(checkpoint.weights.clone())),
                _ => build_router(kind, &settings).expect("baseline builds"),
            }
        };
        run(kind.as_str().to_string(), &mut make, true);
        if matches!(
            kind,
            RouterKind::LeastLoaded
                | RouterKind::JoinShortestQueue
                | RouterKind::Greedy
                | RouterKind::Ppo
        ) {
            run(format!("{}, full scan", kind.as_str()), &mut make, false);
        }
    }
    rows
}

/// PPO as it decided before the cache and the batched network: full scan, one by one.
fn one_by_one_row(setup: &Setup, checkpoint: &Checkpoint) -> (String, Vec<f64>) {
    let mut costs = Vec::new();
    for n in FLEETS {
        let mut before = OneByOne {
            weights: checkpoint.weights.clone(),
            candidates: Candidates::default(),
            logits: Vec::new(),
            scratch: Scratch::default(),
        };
        let mut route = |o: &Observation, r: &RouteRequest| before.route(o, r);
        let (us, _) = time(
            &mut route,
            observation(n, &setup.profile, &setup.model),
            false,
            setup.budget,
        );
        costs.push(us);
    }
    eprintln!("ppo, full scan, one by one: {costs:.2?}");
    ("ppo, full scan, one by one (before)".into(), costs)
}

/// The Markdown table: µs per decision per fleet size and the ratios to 5 devices.
fn print_table(rows: &[(String, Vec<f64>)]) {
    println!(
        "| router | µs per decision, 5 devices | 50 devices | 500 devices | 50 ÷ 5 | 500 ÷ 5 |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, c) in rows {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} |",
            c[0],
            c[1],
            c[2],
            c[1] / c[0],
            c[2] / c[0]
        );
    }
}
