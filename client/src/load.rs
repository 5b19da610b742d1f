//! Open-loop load: requests arrive as a Poisson process, whatever the system's speed, and every
//! answer (or its absence) is accounted for.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, Exp};
use slim_protocol::{ErrorCode, InferRequest, PROTOCOL_VERSION};

use crate::{
    client::{Reply, SlimClient},
    samples::Sample,
};

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Model family.
    pub model: String,
    /// Mean arrival rate, requests per second.
    pub rate: f64,
    /// How long to keep sending.
    pub duration: Duration,
    /// How long to wait for the last answers after sending stops.
    pub drain: Duration,
    /// Seed for arrivals and sample choice.
    pub seed: u64,
    /// Optional pinned width.
    pub width: Option<f32>,
    /// Optional accuracy floor.
    pub min_accuracy: Option<f32>,
    /// Optional latency budget, ms.
    pub deadline_ms: Option<u32>,
    /// Fraction of requests that carry `min_accuracy` and `deadline_ms` (0–1; the rest carry
    /// neither). Which ones is drawn from a generator of its own, seeded from `seed`, so the
    /// arrivals and inputs are the same at every share.
    pub constrained_share: f64,
}

impl LoadSpec {
    /// How long [`LoadSpec::new`] waits for the last answers after sending stops.
    pub const DEFAULT_DRAIN: Duration = Duration::from_secs(20);

    /// `rate` requests per second for `model` during `duration`, then up to
    /// [`LoadSpec::DEFAULT_DRAIN`] for the last answers; seed 0, no pinned width, no accuracy
    /// floor, no deadline. The `with_*` methods change one of those.
    pub fn new(model: impl Into<String>, rate: f64, duration: Duration) -> Self {
        Self {
            model: model.into(),
            rate,
            duration,
            drain: Self::DEFAULT_DRAIN,
            seed: 0,
            width: None,
            min_accuracy: None,
            deadline_ms: None,
            constrained_share: 1.0,
        }
    }

    /// Waits up to `drain` for the last answers after sending stops.
    pub fn with_drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Seeds arrivals and sample choice.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Pins every request to `width`.
    pub fn with_width(mut self, width: f32) -> Self {
        self.width = Some(width);
        self
    }

    /// Asks for at least `min_accuracy` on every request.
    pub fn with_min_accuracy(mut self, min_accuracy: f32) -> Self {
        self.min_accuracy = Some(min_accuracy);
        self
    }

    /// Gives every request a latency budget of `deadline_ms`.
    pub fn with_deadline_ms(mut self, deadline_ms: u32) -> Self {
        self.deadline_ms = Some(deadline_ms);
        self
    }

    /// Gives the accuracy floor and deadline to only this fraction of the requests.
    pub fn with_constrained_share(mut self, share: f64) -> Self {
        self.constrained_share = share;
        self
    }
}

/// One answered request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// End-to-end latency seen by the client.
    pub latency: Duration,
    /// The answer.
    pub reply: Reply,
    /// Ground truth, if the sample was labelled.
    pub label: Option<u32>,
    /// When the request was sent, from the start of the run.
    pub sent_after: Duration,
    /// The latency budget the request carried, ms.
    pub deadline_ms: Option<u32>,
}

/// Everything a load run observed.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Requests sent.
    pub sent: usize,
    /// Answers received.
    pub outcomes: Vec<Outcome>,
    /// Wall time from the first send to the last answer.
    pub elapsed: Duration,
    /// Wall time from the first send to the last: longer than the load's duration when the
    /// client could not send as fast as the arrivals asked (a broker's flow control holds its
    /// publishes back, or its own CPU is short), which makes the load less than it was meant
    /// to be.
    pub sending: Duration,
    /// Answers dropped as duplicates of an answered request during the run.
    pub duplicates: u64,
    /// Requests sent with a deadline.
    pub with_deadline: usize,
    /// Requests the client answered `overloaded` itself, holding their model as the
    /// coordinator asked (counted among the answers too).
    pub held_locally: u64,
}

/// Seed offset of the generator that picks the constrained requests.
const CONSTRAINED_STREAM: u64 = 0x5eed_c045;

/// Runs an open-loop Poisson load through `client`, drawing inputs from `samples`.
pub async fn run_open_loop(
    client: &SlimClient,
    samples: &[Sample],
    spec: &LoadSpec,
) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(!samples.is_empty(), "no input samples");
    anyhow::ensure!(spec.rate > 0.0, "rate must be positive");
    anyhow::ensure!(
        (0.0..=1.0).contains(&spec.constrained_share),
        "the constrained share must be within 0..1"
    );
    let mut rng = StdRng::seed_from_u64(spec.seed);
    // which requests carry the constraints: a stream of its own, so arrivals do not depend on it
    let mut constrained = StdRng::seed_from_u64(spec.seed ^ CONSTRAINED_STREAM);
    let gaps = Exp::new(spec.rate)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let start = Instant::now();
    let mut next = start;
    let (mut sent, mut with_deadline) = (0usize, 0usize);
    // Ids must be unique across runs, so they do not come from the seeded generator.
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let duplicates_before = client.duplicate_answers();
    let held_before = client.held_locally();
    let retry_until = start + spec.duration + spec.drain;
    while next.duration_since(start) < spec.duration {
        tokio::time::sleep_until(next.into()).await;
        let sample = &samples[rng.gen_range(0..samples.len())];
        let mut request = InferRequest::new(
            format!("{}-{sent}", &run_id[..12]),
            spec.model.clone(),
            sample.input.clone(),
        );
        request.v = PROTOCOL_VERSION;
        request.width = spec.width;
        if constrained.gen_bool(spec.constrained_share) {
            request.min_accuracy = spec.min_accuracy;
            request.deadline_ms = spec.deadline_ms;
        }
        let deadline_ms = request.deadline_ms;
        request.sent_at_ms = Some(slim_protocol::now_ms());
        let pending = client.send_until(request, Some(retry_until)).await?;
        sent += 1;
        with_deadline += usize::from(deadline_ms.is_some());
        let (tx, label, sent_at) = (tx.clone(), sample.label, Instant::now());
        let sent_after = sent_at.duration_since(start);
        tokio::spawn(async move {
            if let Ok(reply) = pending.await {
                let _ = tx.send(Outcome {
                    latency: sent_at.elapsed(),
                    reply,
                    label,
                    sent_after,
                    deadline_ms,
                });
            }
        });
        next += Duration::from_secs_f64(gaps.sample(&mut rng));
    }
    let sending = start.elapsed();
    drop(tx);
    let mut outcomes = Vec::with_capacity(sent);
    let deadline = Instant::now() + spec.drain;
    let mut last = Instant::now();
    while outcomes.len() < sent {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(o)) => {
                outcomes.push(o);
                last = Instant::now();
            }
            _ => break,
        }
    }
    Ok(LoadReport {
        sent,
        outcomes,
        elapsed: last.duration_since(start),
        sending,
        duplicates: client.duplicate_answers() - duplicates_before,
        with_deadline,
        held_locally: client.held_locally() - held_before,
    })
}

/// Figures a user reads after a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Requests sent.
    pub sent: usize,
    /// How long sending took (see [`LoadReport::sending`]).
    pub sending: Duration,
    /// Answered with a result.
    pub answered: usize,
    /// Answered with an error, by code.
    pub errored: BTreeMap<String, usize>,
    /// Never answered.
    pub lost: usize,
    /// Second answers to an answered request, dropped by the client.
    pub duplicates: u64,
    /// Of the `overloaded` errors, those the client gave itself without sending the request
    /// (the coordinator had asked it to hold the model).
    pub held_locally: u64,
    /// Results per second over the run.
    pub throughput: f64,
    /// Latency percentiles of results, ms: p50, p95, p99, mean.
    pub latency_ms: [f64; 4],
    /// Results per width (width × 1000 → count).
    pub widths: BTreeMap<u16, usize>,
    /// Mean of the manifest accuracy of the widths used.
    pub implied_accuracy: f64,
    /// Top-1 accuracy against labels, with the number of labelled results.
    pub observed_accuracy: Option<(f64, usize)>,
    /// Results per agent.
    pub agents: BTreeMap<String, usize>,
    /// Mean agent-side queue and compute time of results, ms.
    pub agent_ms: [f64; 2],
    /// Mean energy per result, joules, with its source.
    pub energy_j: Option<(f64, String)>,
}

impl LoadReport {
    /// Condenses the run.
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            sent: self.sent,
            duplicates: self.duplicates,
            held_locally: self.held_locally,
            sending: self.sending,
            ..Default::default()
        };
        let mut latencies = Vec::new();
        let (mut acc_sum, mut energy_sum, mut energy_source) = (0.0, 0.0, String::new());
        let (mut labelled, mut correct) = (0usize, 0usize);
        for o in &self.outcomes {
            match &o.reply {
                Reply::Result(r) => {
                    s.answered += 1;
                    latencies.push(o.latency.as_secs_f64() * 1000.0);
                    *s.widths
                        .entry((r.width * 1000.0).round() as u16)
                        .or_default() += 1;
                    *s.agents.entry(r.agent.clone()).or_default() += 1;
                    acc_sum += r.accuracy as f64;
                    s.agent_ms[0] += r.timings.queue_ms as f64;
                    s.agent_ms[1] += r.timings.compute_ms as f64;
                    energy_sum += r.energy_j as f64;
                    energy_source = format!("{:?}", r.energy_source).to_lowercase();
                    if let Some(label) = o.label {
                        labelled += 1;
                        if r.top_k.first().map(|c| c.class) == Some(label) {
                            correct += 1;
                        }
                    }
                }
                Reply::Error(e) => *s.errored.entry(code_name(e.code)).or_default() += 1,
            }
        }
        s.lost = self.sent - self.outcomes.len();
        s.throughput = s.answered as f64 / self.elapsed.as_secs_f64().max(1e-9);
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if latencies.is_empty() {
                0.0
            } else {
                latencies[((latencies.len() - 1) as f64 * p).round() as usize]
            }
        };
        let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
        s.latency_ms = [pct(0.5), pct(0.95), pct(0.99), mean];
        if s.answered > 0 {
            s.agent_ms = s.agent_ms.map(|v| v / s.answered as f64);
            s.implied_accuracy = acc_sum / s.answered as f64;
            s.energy_j = Some((energy_sum / s.answered as f64, energy_source));
        }
        if labelled > 0 {
            s.observed_accuracy = Some((correct as f64 / labelled as f64, labelled));
        }
        s
    }
}

/// A width mix as tables print it (`0.25x 80%`, then the next, joined by `sep`): `widths` maps
/// width × 1000 to a count, as [`Summary::widths`] does.
pub fn width_mix(widths: &BTreeMap<u16, usize>, sep: &str) -> String {
    let total = widths.values().sum::<usize>().max(1) as f64;
    widths
        .iter()
        .map(|(w, n)| {
            format!(
                "{:.2}x {:.0}%",
                f64::from(*w) / 1000.0,
                100.0 * *n as f64 / total
            )
        })
        .collect::<Vec<_>>()
        .join(sep)
}

fn code_name(code: ErrorCode) -> String {
    code.as_str().to_string()
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let errored: usize = self.errored.values().sum();
        writeln!(
            f,
            "  requests   sent {} in {:.1} s  answered {}  errored {}  lost {}  duplicate answers dropped {}",
            self.sent, self.sending.as_secs_f64(), self.answered, errored, self.lost, self.duplicates
        )?;
        for (code, n) in &self.errored {
            if code == "overloaded" && self.held_locally > 0 {
                let held = self.held_locally;
                writeln!(f, "             error {code}: {n} ({held} not sent: held by this client as the coordinator asked)")?;
            } else {
                writeln!(f, "             error {code}: {n}")?;
            }
        }
        writeln!(f, "  throughput {:.1} results/s", self.throughput)?;
        let [p50, p95, p99, mean] = self.latency_ms;
        writeln!(f, "  latency    p50 {p50:.1} ms  p95 {p95:.1} ms  p99 {p99:.1} ms  mean {mean:.1} ms (client side, end to end)")?;
        writeln!(f, "             agent side: queue {:.1} ms, compute {:.1} ms (mean; compute includes emulated slowdown)", self.agent_ms[0], self.agent_ms[1])?;
        let total = self.answered.max(1) as f64;
        let mix: Vec<String> = self
            .widths
            .iter()
            .map(|(w, n)| {
                format!(
                    "{:.2}x {:.0}%",
                    *w as f64 / 1000.0,
                    100.0 * *n as f64 / total
                )
            })
            .collect();
        writeln!(f, "  widths     {}", mix.join("  "))?;
        writeln!(
            f,
            "  accuracy   {:.2}% implied by the widths used (manifest top-1)",
            100.0 * self.implied_accuracy
        )?;
        if let Some((acc, n)) = self.observed_accuracy {
            writeln!(
                f,
                "             {:.2}% observed on {n} labelled held-out inputs",
                100.0 * acc
            )?;
        }
        if let Some((e, source)) = &self.energy_j {
            writeln!(f, "  energy     {:.4} J per result (source: {source})", e)?;
        }
        for (agent, n) in &self.agents {
            writeln!(
                f,
                "  agent      {agent:<24} {n:>7} results ({:.0}%)",
                100.0 * *n as f64 / total
            )?;
        }
        Ok(())
    }
}
