//! The discrete-event engine.
//!
//! Events (arrivals, batch completions, batching timers, fleet events) sit in a binary heap
//! ordered by time, then by insertion. A request that needs a placement stops the clock:
//! [`Simulator::next_decision`] returns, the caller asks a router with
//! [`Simulator::observation`], and [`Simulator::apply`] places the request. The observation of
//! each model is kept and updated in place, so a decision allocates nothing.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Exp1;
use slim_protocol::WidthKey;

use super::meter::PowerMeter;
use super::reported::{QueueState, Reported, Snapshot};
use super::scenario::{FleetEventKind, Scenario};
use super::summary::{RequestRecord, Summary};
use crate::calibration::Transport;
use crate::fleet::{width_options, DeviceSpec, Fleet, ModelSpec, WidthSpec};
use crate::reward::{Outcome, RewardWeights};
use crate::{
    ArrivalRate, DeviceView, Observation, Route, RouteRequest, Router, Scales, WidthOption,
};

/// A request that finished, for learners that need its outcome: one per decision that placed
/// it. A request placed again after its device left yields one for the decision that placed it
/// last and one for each earlier one, so every decision is charged what finally happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion {
    /// The decision (counted from 0) this completion credits.
    pub decision: u64,
    /// Index of its model in the fleet.
    pub model: usize,
    /// What happened.
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy)]
enum EventKind {
    Arrival,
    BatchDone { device: usize, batch: u64 },
    Timer { device: usize },
    Fleet(usize),
}

#[derive(Debug, Clone, Copy)]
struct Event {
    at: f64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    /// Reversed: the heap pops the earliest event first, ties in insertion order.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.total_cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Clone)]
struct Request {
    model: usize,
    arrival: f64,
    deadline_ms: Option<f32>,
    min_accuracy: Option<f32>,
    width: usize,
    batch: u16,
    enqueued: f64,
    work_ms: f64,
    decision: u64,
    /// Whether a decision has placed it (so a new one is a re-placement).
    placed: bool,
    /// Decisions that placed it before its device left (empty unless re-routed).
    earlier: Vec<u64>,
}

#[derive(Debug, Clone)]
struct RunningBatch {
    id: u64,
    end: f64,
    requests: Vec<u32>,
    mem: u64,
    extra_power_w: f32,
}

/// Latency, power and memory of one (model, width) at every batch size 1..=max_batch.
#[derive(Debug, Clone)]
struct WidthCost {
    latency_ms: Vec<f32>,
    power_w: Vec<f32>,
    mem_bytes: Vec<u64>,
}

#[derive(Debug, Clone)]
struct Device {
    online: bool,
    slowdown: f32,
    instances: u16,
    busy: u16,
    max_batch: u16,
    memory: u64,
    mem_held: u64,
    idle_power_w: f32,
    max_power_w: f32,
    /// `[model][width]`; `None` when the device lacks that width.
    costs: Vec<Vec<Option<WidthCost>>>,
    /// Queue per (model, width), flattened as `model * widths + width`.
    queues: Vec<VecDeque<u32>>,
    widths_per_model: usize,
    queued: u32,
    outstanding: u32,
    queued_work_ms: f64,
    running: Vec<RunningBatch>,
    recent_ms: Vec<Vec<Option<f32>>>,
    timer_at: f64,
    /// Whole-device energy, idle time included.
    meter: PowerMeter,
    /// What a live coordinator would know of it (used with a telemetry interval).
    reported: Reported,
    /// Fixed time each request spends in the agent outside its batch, ms.
    handoff_ms: f64,
}

impl Device {
    /// Power now: idle plus the running batches' extra, at most the device's maximum.
    fn power_now(&self) -> f32 {
        let extra: f32 = self.running.iter().map(|b| b.extra_power_w).sum();
        (self.idle_power_w + extra).min(self.max_power_w.max(self.idle_power_w))
    }

    /// Busy share of its instances.
    fn util(&self) -> f32 {
        f32::from(self.busy) / f32::from(self.instances.max(1))
    }

    /// Tells the meter the power changed at `now_ms`; an offline device draws nothing.
    fn meter_power(&mut self, now_ms: f64) {
        let power = if self.online { self.power_now() } else { 0.0 };
        self.meter.set(now_ms, power);
    }
}

/// The cluster simulator. Pure and seeded: the same fleet, scenario and seed give the same run.
#[derive(Debug)]
pub struct Simulator {
    scenario: Scenario,
    rng: StdRng,
    model_pick: WeightedIndex<f64>,
    now: f64,
    seq: u64,
    events: BinaryHeap<Event>,
    devices: Vec<Device>,
    model_names: Vec<String>,
    /// Top-1 per `[model][width]`.
    top1: Vec<Vec<f32>>,
    widths: Vec<Vec<f32>>,
    scales: Vec<Scales>,
    observations: Vec<Observation>,
    /// For each model, for each device: the index of each observation width in the model's widths.
    width_index: Vec<Vec<Vec<usize>>>,
    /// Each model's recent arrival rate, as the coordinator estimates it.
    arrival_rates: Vec<ArrivalRate>,
    requests: Vec<Request>,
    arrived: usize,
    burst_on: bool,
    burst_toggle_at: f64,
    to_route: VecDeque<u32>,
    pending: Option<u32>,
    route_request: RouteRequest,
    decisions: u64,
    next_batch_id: u64,
    records: Vec<RequestRecord>,
    completions: Vec<Completion>,
    dropped: usize,
    rerouted: usize,
    /// Delay outside the devices, added to each request's latency (from a calibration), drawn
    /// from its own generator so that the workload is the same with and without it.
    transport: Option<(Transport, StdRng)>,
    /// Routers see each device as of its latest telemetry report, this often (ms).
    telemetry_interval_ms: Option<f64>,
}

/// Each model's observation before anything happens, and for each model and device the index of
/// each observation width in the model's widths.
fn initial_views(fleet: &Fleet, scenario: &Scenario) -> (Vec<Observation>, Vec<Vec<Vec<usize>>>) {
    let mut observations = Vec::new();
    let mut width_index = Vec::new();
    for model in &fleet.models {
        let mut devices = Vec::new();
        let mut index = Vec::new();
        for spec in &fleet.devices {
            let options = width_options(spec, model, &scenario.batch_sizes);
            index.push(
                options
                    .iter()
                    .map(|o| {
                        model
                            .widths
                            .iter()
                            .position(|w| WidthKey::same(w.width, o.width))
                            .unwrap_or(0)
                    })
                    .collect(),
            );
            devices.push(initial_view(spec, options));
        }
        observations.push(Observation { devices });
        width_index.push(index);
    }
    (observations, width_index)
}

/// The view of an idle device `spec` offering `widths`.
fn initial_view(spec: &DeviceSpec, widths: Vec<WidthOption>) -> DeviceView {
    DeviceView {
        agent: spec.agent.clone(),
        online: true,
        outstanding: 0,
        queue_depth: 0,
        backlog_ms: 0.0,
        instances: spec.instances,
        cpu_util: 0.0,
        gpu_util: Some(0.0),
        mem_free_bytes: spec.memory_bytes,
        power_w: spec.profile.idle_power_w,
        max_batch: spec.max_batch,
        slowdown: 1.0,
        widths,
        arrival_rate_per_s: 0.0,
        // Every view is refilled before each decision: not tracked.
        version: 0,
    }
}

impl WidthCost {
    /// The cost of `model` at `width` on `spec` at every batch size up to its largest; `None`
    /// when its profile lacks that width.
    fn of(spec: &DeviceSpec, model: &ModelSpec, width: &WidthSpec) -> Option<Self> {
        let mut cost = Self {
            latency_ms: Vec::new(),
            power_w: Vec::new(),
            mem_bytes: Vec::new(),
        };
        for b in 1..=spec.max_batch {
            let (l, p) = spec.profile.cost(&model.name, width.width, b)?;
            cost.latency_ms.push(l);
            cost.power_w.push(p);
            cost.mem_bytes.push(model.instance_mem_bytes(width, b));
        }
        Some(cost)
    }
}

impl Device {
    /// Device `d` of `fleet`, idle, with an empty queue per (model, width) (`widths` per model,
    /// at most `widths_per_model`).
    fn new(
        d: usize,
        spec: &DeviceSpec,
        fleet: &Fleet,
        widths: &[Vec<f32>],
        widths_per_model: usize,
    ) -> Self {
        let costs = fleet
            .models
            .iter()
            .map(|m| m.widths.iter().map(|w| WidthCost::of(spec, m, w)).collect())
            .collect();
        Self {
            online: true,
            slowdown: 1.0,
            instances: spec.instances,
            busy: 0,
            max_batch: spec.max_batch,
            memory: spec.memory_bytes,
            mem_held: 0,
            idle_power_w: spec.profile.idle_power_w,
            max_power_w: spec.profile.max_power_w,
            costs,
            queues: vec![VecDeque::new(); fleet.models.len() * widths_per_model],
            widths_per_model,
            queued: 0,
            outstanding: 0,
            queued_work_ms: 0.0,
            running: Vec::new(),
            recent_ms: widths.iter().map(|w| vec![None; w.len()]).collect(),
            timer_at: f64::INFINITY,
            meter: PowerMeter::new(spec.profile.idle_power_w),
            reported: Reported::new(Reported::first_report_at(
                d,
                fleet.telemetry_interval_ms.unwrap_or(0.0),
            )),
            handoff_ms: f64::from(spec.handoff_ms.max(0.0)),
        }
    }
}

/// Takes `device`'s telemetry report if one was due by `now` (its state now stands for its
/// state at the report).
fn refresh_report(device: &mut Device, requests: &[Request], now: f64, interval_ms: f64) {
    let (util, power_w) = (device.util(), device.power_now());
    let Device {
        reported,
        queues,
        outstanding,
        queued,
        ..
    } = device;
    reported.refresh(now, interval_ms, || Snapshot {
        outstanding: *outstanding,
        queue_depth: *queued,
        util,
        power_w,
        queues: queue_states(queues, requests, now),
    });
}

/// Sets a width's queue figures from `state`.
fn set_queue(option: &mut WidthOption, state: QueueState) {
    option.queue_depth = state.depth;
    option.oldest_wait_ms = state.oldest_wait_ms;
}

/// The state of every (model, width) queue in `queues` at `now`: depth and the wait of its
/// oldest request.
fn queue_states(queues: &[VecDeque<u32>], requests: &[Request], now: f64) -> Vec<QueueState> {
    queues
        .iter()
        .map(|q| queue_state(q, requests, now))
        .collect()
}

fn queue_state(queue: &VecDeque<u32>, requests: &[Request], now: f64) -> QueueState {
    QueueState {
        depth: queue.len() as u32,
        oldest_wait_ms: queue.front().map_or(0.0, |&id| {
            (now - requests[id as usize].enqueued).max(0.0) as f32
        }),
    }
}

impl Simulator {
    /// A simulator of `fleet` running `scenario`, seeded with `seed`.
    pub fn new(fleet: &Fleet, scenario: &Scenario, seed: u64) -> Self {
        let widths: Vec<Vec<f32>> = fleet
            .models
            .iter()
            .map(|m| m.widths.iter().map(|w| w.width).collect())
            .collect();
        let widths_per_model = widths.iter().map(Vec::len).max().unwrap_or(0);
        let (observations, width_index) = initial_views(fleet, scenario);
        let scales = observations.iter().map(Scales::from_observation).collect();
        let devices = fleet
            .devices
            .iter()
            .enumerate()
            .map(|(d, spec)| Device::new(d, spec, fleet, &widths, widths_per_model))
            .collect();
        let mix: Vec<f64> = if scenario.model_mix.len() == fleet.models.len() {
            scenario.model_mix.clone()
        } else {
            vec![1.0; fleet.models.len()]
        };
        let mut sim = Self {
            scenario: scenario.clone(),
            rng: StdRng::seed_from_u64(seed),
            model_pick: WeightedIndex::new(&mix).expect("model mix has a positive weight"),
            now: 0.0,
            seq: 0,
            events: BinaryHeap::new(),
            devices,
            model_names: fleet.models.iter().map(|m| m.name.clone()).collect(),
            top1: fleet
                .models
                .iter()
                .map(|m| m.widths.iter().map(|w| w.top1).collect())
                .collect(),
            widths,
            scales,
            observations,
            width_index,
            arrival_rates: vec![ArrivalRate::new(); fleet.models.len()],
            requests: Vec::with_capacity(scenario.requests),
            arrived: 0,
            burst_on: false,
            burst_toggle_at: f64::INFINITY,
            to_route: VecDeque::new(),
            pending: None,
            route_request: RouteRequest::default(),
            decisions: 0,
            next_batch_id: 0,
            records: Vec::with_capacity(scenario.requests),
            completions: Vec::new(),
            dropped: 0,
            rerouted: 0,
            transport: fleet
                .transport
                .clone()
                .map(|t| (t, StdRng::seed_from_u64(seed ^ 0x7472_616e_7370_6f72))),
            telemetry_interval_ms: fleet.telemetry_interval_ms.filter(|i| *i > 0.0),
        };
        sim.schedule_start();
        sim
    }

    /// Queues what happens first: the burst clock, the fleet events and the first arrival (in
    /// this order, which fixes the draws from the seeded generator).
    fn schedule_start(&mut self) {
        if let Some(burst) = self.scenario.burst {
            self.burst_toggle_at = self.exp(burst.mean_off_ms);
        }
        for (i, e) in self.scenario.events.clone().iter().enumerate() {
            self.push(e.at_ms, EventKind::Fleet(i));
        }
        if self.scenario.requests > 0 {
            let first = self.next_arrival_gap();
            self.push(first, EventKind::Arrival);
        }
    }

    /// Reference scales of each model, in fleet order (the reward's units).
    pub fn scales(&self) -> &[Scales] {
        &self.scales
    }

    /// Current simulated time, ms.
    pub fn now_ms(&self) -> f64 {
        self.now
    }

    /// Decisions taken so far.
    pub fn decisions(&self) -> u64 {
        self.decisions
    }

    /// Runs until a request needs a placement (`true`), or until every request has finished
    /// (`false`).
    pub fn next_decision(&mut self) -> bool {
        loop {
            if self.pending.is_some() {
                return true;
            }
            if let Some(id) = self.to_route.pop_front() {
                self.prepare(id);
                return true;
            }
            let Some(event) = self.events.pop() else {
                return false;
            };
            self.now = event.at;
            match event.kind {
                EventKind::Arrival => self.arrive(),
                EventKind::BatchDone { device, batch } => self.finish_batch(device, batch),
                EventKind::Timer { device } => {
                    if self.devices[device].timer_at <= self.now {
                        self.devices[device].timer_at = f64::INFINITY;
                    }
                    self.dispatch(device);
                }
                EventKind::Fleet(i) => self.fleet_event(i),
            }
        }
    }

    /// The observation and request of the pending decision.
    ///
    /// # Panics
    /// When no decision is pending.
    pub fn observation(&self) -> (&Observation, &RouteRequest) {
        let id = self.pending.expect("a decision is pending");
        (
            &self.observations[self.requests[id as usize].model],
            &self.route_request,
        )
    }

    /// Places the pending request; `None` (no eligible device) drops it.
    pub fn apply(&mut self, route: Option<Route>) {
        let Some(id) = self.pending.take() else {
            return;
        };
        let decision = self.decisions;
        self.decisions += 1;
        let model = self.requests[id as usize].model;
        let Some(route) = route else {
            self.dropped += 1;
            return;
        };
        let view = &self.observations[model].devices;
        let valid = route.device < view.len()
            && self.devices[route.device].online
            && view[route.device]
                .widths
                .iter()
                .position(|w| WidthKey::same(w.width, route.width))
                .is_some();
        if !valid {
            self.dropped += 1;
            return;
        }
        let d = route.device;
        let width = self.widths[model]
            .iter()
            .position(|w| WidthKey::same(*w, route.width))
            .unwrap_or(0);
        let device = &mut self.devices[d];
        let batch = route.batch_size.clamp(1, device.max_batch);
        let cost = device.costs[model][width]
            .as_ref()
            .expect("the view lists only widths the device has");
        let work_ms =
            f64::from(cost.latency_ms[usize::from(batch) - 1] * device.slowdown) / f64::from(batch);
        let queue = model * device.widths_per_model + width;
        device.queues[queue].push_back(id);
        device.queued += 1;
        device.outstanding += 1;
        device.reported.assigned();
        device.queued_work_ms += work_ms;
        let request = &mut self.requests[id as usize];
        request.width = width;
        request.batch = batch;
        request.enqueued = self.now;
        request.work_ms = work_ms;
        if request.placed {
            request.earlier.push(request.decision);
        }
        request.placed = true;
        request.decision = decision;
        self.dispatch(d);
    }

    /// Outcomes of requests finished since the last call.
    pub fn drain_completions(&mut self) -> std::vec::Drain<'_, Completion> {
        self.completions.drain(..)
    }

    /// Runs to the end with `router` and summarizes the run under `weights`.
    pub fn run(&mut self, router: &mut dyn Router, weights: &RewardWeights) -> Summary {
        while self.next_decision() {
            let (observation, request) = self.observation();
            let route = router.route(observation, request);
            self.apply(route);
            self.completions.clear();
        }
        self.summary(weights)
    }

    /// Per-request records so far.
    pub fn records(&self) -> &[RequestRecord] {
        &self.records
    }

    /// Summary of the requests finished so far.
    pub fn summary(&self, weights: &RewardWeights) -> Summary {
        let mut summary = Summary::from_records(
            &self.records,
            &self.scales,
            weights,
            self.arrived,
            self.dropped,
            self.rerouted,
        );
        summary.set_fleet_energy(self.fleet_energy_mj(), self.now);
        summary
    }

    /// Energy every device drew from the start until now, idle time included, mJ (modelled).
    pub fn fleet_energy_mj(&self) -> f64 {
        self.devices
            .iter()
            .map(|d| d.meter.energy_at(self.now))
            .sum()
    }

    fn push(&mut self, at: f64, kind: EventKind) {
        self.seq += 1;
        self.events.push(Event {
            at,
            seq: self.seq,
            kind,
        });
    }

    fn exp(&mut self, mean: f64) -> f64 {
        let x: f64 = Exp1.sample(&mut self.rng);
        x * mean
    }

    fn rate_now(&self) -> f64 {
        let mut rate = self.scenario.rate_per_s;
        if let Some(step) = self.scenario.step {
            if self.now >= step.at_ms {
                rate *= step.factor;
            }
        }
        if let (Some(burst), true) = (self.scenario.burst, self.burst_on) {
            rate *= burst.factor;
        }
        rate.max(1e-9)
    }

    fn next_arrival_gap(&mut self) -> f64 {
        if let Some(burst) = self.scenario.burst {
            while self.burst_toggle_at <= self.now {
                self.burst_on = !self.burst_on;
                let mean = if self.burst_on {
                    burst.mean_on_ms
                } else {
                    burst.mean_off_ms
                };
                self.burst_toggle_at += self.exp(mean).max(1e-3);
            }
        }
        let mean_gap_ms = 1000.0 / self.rate_now();
        self.now + self.exp(mean_gap_ms)
    }

    fn arrive(&mut self) {
        let model = self.model_pick.sample(&mut self.rng);
        let deadline_ms = self
            .rng
            .gen_bool(self.scenario.deadline_prob.clamp(0.0, 1.0))
            .then(|| {
                let (lo, hi) = self.scenario.deadline_factor;
                let factor = if hi > lo {
                    self.rng.gen_range(lo..hi)
                } else {
                    lo
                };
                (f64::from(self.scales[model].latency_ms) * factor) as f32
            });
        let min_accuracy = self
            .rng
            .gen_bool(self.scenario.floor_prob.clamp(0.0, 1.0))
            .then(|| {
                let w = self.rng.gen_range(0..self.top1[model].len());
                self.top1[model][w]
            });
        let id = self.requests.len() as u32;
        self.requests.push(Request {
            model,
            arrival: self.now,
            deadline_ms,
            min_accuracy,
            width: 0,
            batch: 1,
            enqueued: self.now,
            work_ms: 0.0,
            decision: 0,
            placed: false,
            earlier: Vec::new(),
        });
        self.arrived += 1;
        self.arrival_rates[model].arrive(self.now);
        self.to_route.push_back(id);
        if self.arrived < self.scenario.requests {
            let at = self.next_arrival_gap();
            self.push(at, EventKind::Arrival);
        }
    }

    /// Fills the observation of request `id`'s model from the devices' state.
    fn prepare(&mut self, id: u32) {
        let request = &self.requests[id as usize];
        let model = request.model;
        self.route_request
            .model
            .clone_from(&self.model_names[model]);
        self.route_request.width = None;
        self.route_request.min_accuracy = request.min_accuracy;
        self.route_request.deadline_ms = request
            .deadline_ms
            .map(|d| (d - (self.now - request.arrival) as f32).max(1.0).ceil() as u32);
        let now = self.now;
        let arrival_rate = self.arrival_rates[model].rate_per_s();
        let requests = &self.requests;
        for (d, view) in self.observations[model].devices.iter_mut().enumerate() {
            let device = &mut self.devices[d];
            view.online = device.online;
            view.arrival_rate_per_s = arrival_rate;
            let first_queue = model * device.widths_per_model;
            let widths = view.widths.iter_mut().zip(&self.width_index[model][d]);
            if let Some(interval) = self.telemetry_interval_ms {
                refresh_report(device, requests, now, interval);
                let r = &device.reported;
                view.outstanding = r.outstanding();
                view.queue_depth = r.latest.queue_depth;
                view.backlog_ms = r.backlog_ms();
                view.cpu_util = r.latest.util;
                view.gpu_util = Some(r.latest.util);
                view.power_w = r.latest.power_w;
                for (option, &w) in widths {
                    set_queue(option, r.latest.queue(first_queue + w));
                }
            } else {
                let util = device.util();
                view.outstanding = device.outstanding;
                view.queue_depth = device.queued;
                let running_ms: f64 = device.running.iter().map(|b| (b.end - now).max(0.0)).sum();
                view.backlog_ms = (device.queued_work_ms.max(0.0) + running_ms) as f32;
                view.cpu_util = util;
                view.gpu_util = Some(util);
                view.power_w = device.power_now();
                for (option, &w) in widths {
                    set_queue(
                        option,
                        queue_state(&device.queues[first_queue + w], requests, now),
                    );
                }
            }
            view.mem_free_bytes = device.memory.saturating_sub(device.mem_held);
            view.slowdown = device.slowdown;
            for (option, &w) in view.widths.iter_mut().zip(&self.width_index[model][d]) {
                option.recent_latency_ms = device.recent_ms[model][w];
            }
        }
        self.pending = Some(id);
    }

    /// Starts batches on `d` while it has free instances and a queue ready to run.
    fn dispatch(&mut self, d: usize) {
        let delay = self.scenario.max_queue_delay_ms;
        loop {
            let device = &self.devices[d];
            if !device.online || device.busy >= device.instances || device.queued == 0 {
                return;
            }
            // The queue whose head has waited longest.
            let Some((queue, head)) = device
                .queues
                .iter()
                .enumerate()
                .filter_map(|(q, queue)| queue.front().map(|&id| (q, id)))
                .min_by(|a, b| {
                    self.requests[a.1 as usize]
                        .enqueued
                        .total_cmp(&self.requests[b.1 as usize].enqueued)
                })
            else {
                return;
            };
            let head_req = &self.requests[head as usize];
            let limit = usize::from(head_req.batch.min(device.max_batch).max(1));
            let ready_at = head_req.enqueued + delay;
            let len = device.queues[queue].len();
            if len < limit && self.now < ready_at {
                if ready_at < device.timer_at {
                    self.devices[d].timer_at = ready_at;
                    self.push(ready_at, EventKind::Timer { device: d });
                }
                return;
            }
            let (model, width) = (head_req.model, head_req.width);
            let n = len.min(limit);
            let cost = device.costs[model][width]
                .as_ref()
                .expect("queued widths exist");
            let mem = cost.mem_bytes[n - 1];
            if device.mem_held + mem > device.memory && device.busy > 0 {
                return; // wait for memory to free up
            }
            let latency = f64::from(cost.latency_ms[n - 1] * device.slowdown);
            let extra_power_w = (cost.power_w[n - 1] - device.idle_power_w).max(0.0);
            let id = self.next_batch_id;
            self.next_batch_id += 1;
            let device = &mut self.devices[d];
            let requests: Vec<u32> = device.queues[queue].drain(..n).collect();
            for &r in &requests {
                device.queued_work_ms -= self.requests[r as usize].work_ms;
            }
            device.queued -= n as u32;
            if device.queued == 0 {
                device.queued_work_ms = 0.0;
            }
            device.busy += 1;
            device.mem_held += mem;
            let end = self.now + latency;
            device.running.push(RunningBatch {
                id,
                end,
                requests,
                mem,
                extra_power_w,
            });
            device.meter_power(self.now);
            self.push(
                end,
                EventKind::BatchDone {
                    device: d,
                    batch: id,
                },
            );
        }
    }

    fn finish_batch(&mut self, d: usize, batch_id: u64) {
        let device = &mut self.devices[d];
        let Some(pos) = device.running.iter().position(|b| b.id == batch_id) else {
            return; // the device left while this batch ran; its requests were routed again
        };
        let batch = device.running.swap_remove(pos);
        device.meter_power(self.now);
        device.busy -= 1;
        device.mem_held -= batch.mem;
        device.outstanding -= batch.requests.len() as u32;
        let n = batch.requests.len();
        let first = &self.requests[batch.requests[0] as usize];
        let (model, width) = (first.model, first.width);
        let cost = device.costs[model][width]
            .as_ref()
            .expect("ran widths exist");
        let latency = cost.latency_ms[n - 1] * device.slowdown;
        let energy_per_request = cost.power_w[n - 1] * latency / n as f32;
        let recent = &mut device.recent_ms[model][width];
        *recent = Some(recent.map_or(latency, |r| 0.8 * r + 0.2 * latency));
        device.reported.finished(latency, n);
        let handoff_ms = device.handoff_ms;
        let top1 = self.top1[model][width];
        let width_value = self.widths[model][width];
        for &r in &batch.requests {
            let outside_ms = match &mut self.transport {
                Some((t, rng)) => t.sample(rng.gen::<f64>()),
                None => 0.0,
            };
            let request = &self.requests[r as usize];
            let latency_ms = (self.now - request.arrival + handoff_ms + outside_ms) as f32;
            let outcome = Outcome {
                latency_ms,
                energy_mj: energy_per_request,
                top1,
                deadline_met: request.deadline_ms.map(|d| latency_ms <= d),
            };
            self.records.push(RequestRecord {
                arrival_ms: request.arrival,
                model: model as u16,
                device: d as u16,
                width: width_value,
                batch: n as u16,
                outcome,
            });
            let decisions = request.earlier.iter().chain([&request.decision]);
            self.completions
                .extend(decisions.map(|&decision| Completion {
                    decision,
                    model,
                    outcome,
                }));
        }
        self.dispatch(d);
    }

    fn fleet_event(&mut self, i: usize) {
        let event = self.scenario.events[i];
        let device = &mut self.devices[event.device];
        match event.kind {
            FleetEventKind::Slowdown(factor) => device.slowdown = factor.max(0.01),
            FleetEventKind::Join => {
                device.online = true;
                device.meter_power(self.now);
                self.dispatch(event.device);
            }
            FleetEventKind::Leave => {
                if !device.online {
                    return;
                }
                device.online = false;
                let mut orphans: Vec<u32> =
                    device.queues.iter_mut().flat_map(|q| q.drain(..)).collect();
                for batch in device.running.drain(..) {
                    orphans.extend(batch.requests);
                }
                device.queued = 0;
                device.outstanding = 0;
                device.queued_work_ms = 0.0;
                device.busy = 0;
                device.mem_held = 0;
                device.timer_at = f64::INFINITY;
                device.meter_power(self.now);
                orphans.sort_unstable();
                self.rerouted += orphans.len();
                self.to_route.extend(orphans);
            }
        }
    }
}
