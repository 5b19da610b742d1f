//! Allocations, bytes and time per routed request through the coordinator's I/O-free core, with
//! its effects performed as the service performs them (`service::Outbox::publication`: the
//! assign topic and the encoded assignment, the decisions topic and the encoded `Decision`),
//! without a broker:
//!
//! ```sh
//! cargo bench --profile dev -p slim-coordinator --bench route_allocs   # the dev profile `slim bench --saturate` runs
//! cargo bench -p slim-coordinator --bench route_allocs                 # release
//! ```
//!
//! The fleet is `slim bench --saturate`'s emulated one: N agents announcing the real `digits`
//! and `cifar-slimresnet` model info (from their manifests) and the `cpu-2core-measured`
//! profile. Requests arrive at 10 000/s on the core's clock; every 2 000 requests (200 ms) each
//! agent reports what it was assigned as done and the core ticks, so the ledger and the
//! monitor drain as with real agents. Only the requests are counted: a warm-up of 10 000 first,
//! then `SLIM_BENCH_REQUESTS` (default 20 000) per case. "do-nothing relay" is the least a relay
//! does per message: copy the payload into a new buffer. Allocations count `alloc` and
//! `realloc` calls; bytes are those requested (new blocks plus growth of reallocated ones).
//! Prints a Markdown table; asserts only that every request was routed once.

use std::{
    alloc::System,
    hint::black_box,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use slim_coordinator::{
    core::{Clock, Core, Effect, Input},
    routing::Routing,
    service::Outbox,
    CoordinatorConfig,
};
use slim_protocol::{
    encode, manifest::Manifest, now_ms, AgentInfo, DeviceInfo, DeviceProfile, InferRequest,
    ModelInfo, RequestKey, Telemetry, Tensor, Topics, PROTOCOL_VERSION,
};
use slim_router::{fleet::ProfileFile, RouterKind};
use stats_alloc::{Region, Stats, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Requests between two telemetry rounds: 200 ms at 10 000 requests/s.
const BATCH: usize = 2000;
/// Time between two requests on the core's clock.
const STEP: Duration = Duration::from_micros(100);
const WARMUP_BATCHES: usize = 5;
const REPLY_TO: &str = "bench/replies/client-1";
const ROUTERS: [RouterKind; 2] = [RouterKind::LeastLoaded, RouterKind::Random];
const FLEETS: [usize; 2] = [5, 50];

/// A request's input: a digits-sized and a cifar-sized u8 tensor.
#[derive(Clone, Copy)]
struct Sample {
    model: &'static str,
    shape: [u32; 3],
}

const SAMPLES: [Sample; 2] = [
    Sample {
        model: "digits",
        shape: [1, 8, 8],
    },
    Sample {
        model: "cifar-slimresnet",
        shape: [3, 32, 32],
    },
];

impl Sample {
    fn bytes(self) -> usize {
        self.shape.iter().product::<u32>() as usize
    }

    fn label(self) -> String {
        let [c, h, w] = self.shape;
        format!("{} {c}×{h}×{w} u8 ({} B)", self.model, self.bytes())
    }
}

/// The core's clock, moved by the benchmark (one atomic: reading it allocates nothing).
#[derive(Clone)]
struct BenchClock {
    base: Instant,
    wall0: u64,
    offset_ns: Arc<AtomicU64>,
}

impl BenchClock {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            wall0: now_ms(),
            offset_ns: Arc::new(AtomicU64::new(0)),
        }
    }

    fn advance(&self, by: Duration) {
        self.offset_ns
            .fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Clock for BenchClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.offset_ns.load(Ordering::Relaxed))
    }

    fn wall_ms(&self) -> u64 {
        self.wall0 + self.offset_ns.load(Ordering::Relaxed) / 1_000_000
    }
}

/// What the measured requests cost, summed.
#[derive(Default, Clone, Copy)]
struct Cost {
    requests: u64,
    allocs: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Cost {
    fn add(&mut self, requests: usize, stats: Stats, elapsed: Duration) {
        self.requests += requests as u64;
        self.allocs += (stats.allocations + stats.reallocations) as u64;
        self.bytes += (stats.bytes_allocated as i64 + stats.bytes_reallocated.max(0) as i64) as u64;
        self.elapsed += elapsed;
    }

    /// Allocations, bytes and nanoseconds per request.
    fn per_request(&self) -> (f64, f64, f64) {
        let n = self.requests.max(1) as f64;
        let ns = self.elapsed.as_nanos() as f64;
        (self.allocs as f64 / n, self.bytes as f64 / n, ns / n)
    }
}

/// What every emulated agent announces: the real model info and the measured profile.
struct Announced {
    models: Vec<ModelInfo>,
    profile: DeviceProfile,
}

impl Announced {
    fn load(root: &Path) -> Self {
        let models = ["digits", "cifar-slimresnet"]
            .iter()
            .map(|family| {
                let manifest = Manifest::load(&root.join("models").join(family));
                manifest.expect("the model's manifest loads").model_info()
            })
            .collect();
        let profile = ProfileFile::load(&root.join("profiles/cpu-2core-measured.toml"))
            .expect("the measured profile loads")
            .profile;
        Self { models, profile }
    }

    fn info(&self, agent: &str) -> AgentInfo {
        AgentInfo {
            v: PROTOCOL_VERSION,
            agent: agent.into(),
            online: true,
            started_at_ms: 1,
            backend: "emulated".into(),
            backend_reason: "route_allocs benchmark".into(),
            device: DeviceInfo {
                hostname: "emulated".into(),
                kind: "cpu".into(),
                cpu_model: "emulated".into(),
                cpu_cores: 1,
                ram_bytes: 1 << 30,
                gpu: None,
                vram_bytes: None,
            },
            models: self.models.clone(),
            max_batch: 32,
            emulation: None,
            profile: Some(self.profile.clone()),
            threads: 1,
            durable: false,
            max_queued: None,
            concurrency: None,
        }
    }
}

fn agent_id(i: usize) -> String {
    format!("agent-{i:04}")
}

/// The index `agent_id` gave `agent` (parsed in place: allocates nothing).
fn agent_index(agent: &str) -> usize {
    agent["agent-".len()..]
        .parse()
        .expect("an agent of the bench")
}

/// A core with an announced fleet, and what the benchmark feeds it.
struct Run {
    core: Core,
    clock: BenchClock,
    topics: Topics,
    outbox: Outbox,
    agents: usize,
    next_id: u64,
    seq: u64,
}

impl Run {
    fn new(router: RouterKind, agents: usize, announced: &Announced) -> Self {
        let config = CoordinatorConfig {
            router,
            http_listen: None,
            ..CoordinatorConfig::default()
        };
        let clock = BenchClock::new();
        let topics = Topics::new(&config.topic_prefix);
        let routing = Routing::build(&config).expect("the router builds");
        let core = Core::new(config, routing, None, Box::new(clock.clone()));
        let mut run = Self {
            core,
            clock,
            outbox: Outbox::new(&topics),
            topics,
            agents,
            next_id: 0,
            seq: 0,
        };
        run.feed(Input::Connected { reconnect: false });
        for i in 0..agents {
            let id = agent_id(i);
            let topic = run.topics.status(&id);
            run.message(topic, encode(&announced.info(&id)));
        }
        run
    }

    fn feed(&mut self, input: Input) {
        let mut effects = Vec::new();
        self.core.handle(input, &mut effects);
    }

    fn message(&mut self, topic: String, payload: Vec<u8>) {
        let payload = Bytes::from(payload);
        self.feed(Input::Message { topic, payload });
    }

    /// `n` new requests for `sample` as they arrive from the broker, and their ids.
    fn requests(&mut self, sample: Sample, n: usize) -> (Vec<Input>, Vec<String>) {
        let topic = self.topics.request(sample.model);
        let ids: Vec<String> = (0..n)
            .map(|i| format!("r{:08}", self.next_id + i as u64))
            .collect();
        self.next_id += n as u64;
        let inputs = ids
            .iter()
            .map(|id| {
                let input = Tensor::from_u8(sample.shape.to_vec(), vec![7; sample.bytes()]);
                let mut r = InferRequest::new(id.as_str(), sample.model, input);
                r.reply_to = Some(REPLY_TO.into());
                r.sent_at_ms = Some(self.clock.wall_ms());
                let payload = Bytes::from(encode(&r));
                Input::Message {
                    topic: topic.clone(),
                    payload,
                }
            })
            .collect();
        (inputs, ids)
    }

    /// Routes `inputs` and performs the effects as the service does, counted and timed; says
    /// which agent each request went to.
    fn route(&mut self, inputs: Vec<Input>, placed: &mut Vec<usize>) -> (Stats, Duration) {
        let mut effects = Vec::with_capacity(8);
        let (mut assigned, mut decided, mut other) = (0, 0, 0);
        let region = Region::new(GLOBAL);
        let start = Instant::now();
        for input in inputs {
            self.clock.advance(STEP);
            self.core.handle(input, &mut effects);
            for effect in effects.drain(..) {
                match &effect {
                    Effect::Assign { agent, .. } => {
                        placed.push(agent_index(agent));
                        assigned += 1;
                    }
                    Effect::Decision { .. } => decided += 1,
                    Effect::Reply { .. } => other += 1,
                }
                black_box(self.outbox.publication(effect));
            }
        }
        let elapsed = start.elapsed();
        let stats = region.change();
        let n = placed.len();
        assert_eq!((assigned, other), (n, 0), "one placement each");
        // Decision records go out in batches (and the rest at the next tick, in `report`).
        let full = slim_protocol::limits::MAX_DECISIONS_PER_MESSAGE;
        assert!(decided <= n / full + 1, "{decided} batches for {n}");
        (stats, elapsed)
    }

    /// Every agent reports the requests it was given as done, then the core ticks (uncounted).
    fn report(&mut self, ids: &[String], placed: &[usize]) {
        let mut done = vec![Vec::new(); self.agents];
        for (id, &agent) in ids.iter().zip(placed) {
            done[agent].push(RequestKey::new(REPLY_TO, id.as_str()).wire());
        }
        self.seq += 1;
        for (i, done) in done.into_iter().enumerate() {
            let agent = agent_id(i);
            let telemetry = Telemetry {
                at_ms: self.clock.wall_ms(),
                outstanding: 0,
                done,
                ..Telemetry::idle(&agent, self.seq)
            };
            let topic = self.topics.telemetry(&agent);
            self.message(topic, encode(&telemetry));
        }
        self.feed(Input::Tick);
    }
}

/// One case: warm-up, then `measured` requests of `sample`.
fn measure(
    router: RouterKind,
    agents: usize,
    sample: Sample,
    announced: &Announced,
    measured: usize,
) -> Cost {
    let mut run = Run::new(router, agents, announced);
    let mut cost = Cost::default();
    let batches = measured.div_ceil(BATCH);
    let mut placed = Vec::with_capacity(BATCH);
    for batch in 0..WARMUP_BATCHES + batches {
        let (inputs, ids) = run.requests(sample, BATCH);
        placed.clear();
        let (stats, elapsed) = run.route(inputs, &mut placed);
        if batch >= WARMUP_BATCHES {
            cost.add(BATCH, stats, elapsed);
        }
        run.report(&ids, &placed);
    }
    cost
}

/// The anchor: each payload copied into a new buffer, nothing decoded.
fn relay(sample: Sample, announced: &Announced, measured: usize) -> Cost {
    let mut run = Run::new(RouterKind::Random, 1, announced);
    let mut cost = Cost::default();
    for batch in 0..WARMUP_BATCHES + measured.div_ceil(BATCH) {
        let (inputs, _) = run.requests(sample, BATCH);
        let region = Region::new(GLOBAL);
        let start = Instant::now();
        for input in inputs {
            if let Input::Message { topic, payload } = input {
                black_box((topic, payload.to_vec()));
            }
        }
        let (elapsed, stats) = (start.elapsed(), region.change());
        if batch >= WARMUP_BATCHES {
            cost.add(BATCH, stats, elapsed);
        }
    }
    cost
}

fn row(case: &str, sample: Sample, cost: Cost, relay_ns: f64) {
    let (allocs, bytes, ns) = cost.per_request();
    println!(
        "| {case} | {} | {allocs:.2} | {bytes:.0} | {ns:.0} | {:.1} |",
        sample.label(),
        ns / relay_ns
    );
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let announced = Announced::load(&root);
    let measured: usize = std::env::var("SLIM_BENCH_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    println!("| case | request | allocations / request | bytes / request | ns / request | × relay (ns) |");
    println!("|---|---|---:|---:|---:|---:|");
    for sample in SAMPLES {
        let anchor = relay(sample, &announced, measured);
        let relay_ns = anchor.per_request().2;
        row("do-nothing relay", sample, anchor, relay_ns);
        for router in ROUTERS {
            for agents in FLEETS {
                let cost = measure(router, agents, sample, &announced, measured);
                let case = format!("{}, {agents} agents", router.as_str());
                row(&case, sample, cost, relay_ns);
            }
        }
    }
}
