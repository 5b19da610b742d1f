//! The knee's steps as a table: each step's throughput and its ratio to the in-process anchor.

use std::{fmt::Write as _, time::Duration};

use slim_client::{client::Reply, load::LoadReport};

use super::{Anchor, KneeSpec, OVERLOAD};

/// One step of offered load.
#[derive(Debug, Clone)]
pub struct Step {
    /// Offered requests per second.
    pub offered: f64,
    /// Requests per second the client managed to send, over the time it took to send them.
    pub sent_rate: f64,
    /// How long sending took, s (the step's duration, or longer when the client fell behind
    /// its arrivals, e.g. held back by the broker's flow control).
    pub sending_s: f64,
    /// Requests sent.
    pub sent: usize,
    /// Answered with a result.
    pub answered: usize,
    /// Answered with an error, by code (`overloaded: 12, no_capacity: 3`).
    pub errors: Vec<(String, usize)>,
    /// Of the `overloaded` errors, those the client gave itself without sending the request.
    pub held: u64,
    /// Never answered within the drain.
    pub lost: usize,
    /// Results per second, first request to last answer.
    pub throughput: f64,
    /// Latency of results, ms: p50, p99.
    pub latency_ms: [f64; 2],
    /// The slowest error reply, ms (how long a refused request waited for its refusal).
    pub slowest_error_ms: Option<f64>,
    /// Where a result's time went, means over the results, ms: inside the agent (arrival to
    /// the result handed to MQTT) and outside it (the rest of the end-to-end latency: the
    /// client, the broker's hops, the coordinator, the agent's MQTT inbox).
    pub split_ms: [f64; 2],
    /// Mean batch size the results ran in.
    pub mean_batch: f64,
    /// The overload step (offered [`OVERLOAD`] × the knee).
    pub overload: bool,
}

impl Step {
    /// The step that offered `offered` req/s for `duration` and saw `load`.
    pub fn new(offered: f64, duration: Duration, load: &LoadReport, overload: bool) -> Self {
        let summary = load.summary();
        let slowest_error_ms = load
            .outcomes
            .iter()
            .filter(|o| matches!(o.reply, Reply::Error(_)))
            .map(|o| o.latency.as_secs_f64() * 1000.0)
            .max_by(f64::total_cmp);
        let (split_ms, mean_batch) = split(load);
        Self {
            offered,
            sent_rate: load.sent as f64 / load.sending.max(duration).as_secs_f64().max(1e-9),
            sending_s: load.sending.as_secs_f64(),
            sent: summary.sent,
            answered: summary.answered,
            errors: summary.errored.into_iter().collect(),
            held: summary.held_locally,
            lost: summary.lost,
            throughput: summary.throughput,
            latency_ms: [summary.latency_ms[0], summary.latency_ms[2]],
            slowest_error_ms,
            split_ms,
            mean_batch,
            overload,
        }
    }

    /// Errors of every code.
    pub fn errored(&self) -> usize {
        self.errors.iter().map(|(_, n)| n).sum()
    }

    fn error_text(&self) -> String {
        if self.errors.is_empty() {
            return "0".into();
        }
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|(c, n)| match self.held {
                held if held > 0 && c == "overloaded" => {
                    format!("{c} {n} ({held} held by the client)")
                }
                _ => format!("{c} {n}"),
            })
            .collect();
        parts.join(", ")
    }

    /// One line for the log.
    pub fn describe(&self, anchor: &Anchor) -> String {
        format!(
            "{}offered {:.0}/s (sent {:.0}/s in {:.1} s): answered {}, errors {}, lost {}; {:.0} results/s = {:.2}x anchor; p50 {:.1} ms, p99 {:.1} ms; mean {:.1} ms in the agent, {:.1} ms outside; mean batch {:.1}",
            if self.overload { "overload: " } else { "" },
            self.offered,
            self.sent_rate,
            self.sending_s,
            self.answered,
            self.error_text(),
            self.lost,
            self.throughput,
            self.throughput / anchor.best(),
            self.latency_ms[0],
            self.latency_ms[1],
            self.split_ms[0],
            self.split_ms[1],
            self.mean_batch
        )
    }
}

/// The mean time of a result inside and outside the agent, ms, and its mean batch size.
fn split(load: &LoadReport) -> ([f64; 2], f64) {
    let (mut n, mut inside, mut total, mut batch) = (0usize, 0.0, 0.0, 0.0);
    for o in &load.outcomes {
        if let Reply::Result(r) = &o.reply {
            n += 1;
            inside += f64::from(r.timings.total_ms);
            total += o.latency.as_secs_f64() * 1000.0;
            batch += f64::from(r.batch_size);
        }
    }
    if n == 0 {
        return ([0.0; 2], 0.0);
    }
    let n = n as f64;
    ([inside / n, (total - inside).max(0.0) / n], batch / n)
}

/// Every step of one run, with its anchor.
#[derive(Debug, Clone)]
pub struct KneeReport {
    /// The in-process anchor.
    pub anchor: Anchor,
    /// The broker used.
    pub broker: String,
    /// Agents and threads, for the heading.
    pub agents: usize,
    /// The router.
    pub router: String,
    /// The sweep's steps, then the overload step.
    pub steps: Vec<Step>,
}

impl KneeReport {
    pub fn new(spec: &KneeSpec, anchor: Anchor, broker: String) -> Self {
        Self {
            anchor,
            broker,
            agents: spec.agents,
            router: spec.router.as_str().to_string(),
            steps: Vec::new(),
        }
    }

    /// The sweep's step with the highest throughput among those that lost nothing (a step
    /// that lost requests is past what the system can take, whatever it delivered); the
    /// highest of all when every step lost some.
    pub fn knee(&self) -> Option<&Step> {
        let best = |lossless: bool| {
            self.steps
                .iter()
                .filter(|s| !s.overload && (!lossless || s.lost == 0))
                .max_by(|a, b| a.throughput.total_cmp(&b.throughput))
        };
        best(true).or_else(|| best(false))
    }

    /// The overload step, once run.
    pub fn overload(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.overload)
    }

    /// The table and what it says, as markdown.
    pub fn markdown(&self) -> String {
        let a = &self.anchor;
        let mut md = format!(
            "{} at width {}, {} agent(s) on {} with {} thread(s) each, router {}, broker {}.\n\n\
             Anchor, measured first in the same process: one instance on {}, {:.0} img/s at batch 1, \
             {:.0} img/s at batch {}; ratios below are against the better, {:.0} img/s.\n\n",
            a.model,
            a.width,
            self.agents,
            a.backend,
            a.threads,
            self.router,
            self.broker,
            a.backend,
            a.b1,
            a.batched.1,
            a.batched.0,
            a.best()
        );
        md.push_str(
            "| offered req/s | × anchor | sent req/s | sending s | sent | results | errors | lost | results/s | × anchor | p50 ms | p99 ms | slowest error ms | in agent ms | outside ms | batch |\n\
             |---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for s in &self.steps {
            let _ = writeln!(
                md,
                "| {}{:.0} | {:.2} | {:.0} | {:.1} | {} | {} | {} | {} | {:.0} | {:.2} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {:.1} |",
                if s.overload { "overload: " } else { "" },
                s.offered,
                s.offered / a.best(),
                s.sent_rate,
                s.sending_s,
                s.sent,
                s.answered,
                s.error_text(),
                s.lost,
                s.throughput,
                s.throughput / a.best(),
                s.latency_ms[0],
                s.latency_ms[1],
                s.slowest_error_ms
                    .map_or_else(|| "—".into(), |ms| format!("{ms:.0}")),
                s.split_ms[0],
                s.split_ms[1],
                s.mean_batch
            );
        }
        md.push('\n');
        md.push_str(&self.verdict());
        md
    }

    /// The knee's ratio and what the overload step lost.
    fn verdict(&self) -> String {
        let mut out = String::new();
        if let Some(k) = self.knee() {
            let _ = writeln!(
                out,
                "Knee: {:.0} results/s at {:.0} req/s offered, {:.2}× the in-process anchor.",
                k.throughput,
                k.offered,
                k.throughput / self.anchor.best()
            );
        }
        if let Some(o) = self.overload() {
            let _ = writeln!(
                out,
                "Overload ({OVERLOAD}× the knee): {} sent, {} results, {} errors, {} lost{}.",
                o.sent,
                o.answered,
                o.errored(),
                o.lost,
                if o.lost == 0 {
                    " — every request was answered"
                } else {
                    " — requests went unanswered within the drain"
                }
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(offered: f64, throughput: f64, lost: usize) -> Step {
        Step {
            offered,
            sent_rate: offered,
            sending_s: 1.0,
            sent: 100,
            answered: 100 - lost,
            errors: Vec::new(),
            held: 0,
            lost,
            throughput,
            latency_ms: [1.0, 2.0],
            slowest_error_ms: None,
            split_ms: [0.5, 1.5],
            mean_batch: 1.0,
            overload: false,
        }
    }

    fn report(steps: Vec<Step>) -> KneeReport {
        KneeReport {
            anchor: Anchor {
                model: "digits".into(),
                width: 0.25,
                threads: 1,
                backend: "cpu",
                b1: 100.0,
                batched: (8, 200.0),
            },
            broker: "mqtt://x".into(),
            agents: 1,
            router: "least-loaded".into(),
            steps,
        }
    }

    /// A client held back by the broker's flow control sent a 5 s step's requests over 20 s:
    /// the table said it sent them at the rate asked, and its throughput past the knee was
    /// measured at a quarter of the load it claimed.
    #[test]
    fn the_sent_rate_is_over_the_time_sending_took() {
        let load = LoadReport {
            sent: 1000,
            sending: Duration::from_secs(20),
            ..LoadReport::default()
        };
        let s = Step::new(200.0, Duration::from_secs(5), &load, false);
        assert_eq!((s.sent_rate, s.sending_s), (50.0, 20.0));
        let on_time = LoadReport {
            sending: Duration::from_millis(4_990),
            ..load
        };
        let s = Step::new(200.0, Duration::from_secs(5), &on_time, false);
        assert_eq!(
            s.sent_rate, 200.0,
            "never above the rate asked for an early stop"
        );
        let md = report(vec![s]).markdown();
        assert!(
            md.contains("| sending s |") && md.contains("| 200 | 5.0 |"),
            "{md}"
        );
    }

    /// On Mosquitto, 1.5x the anchor once delivered the most results while losing 2 142
    /// requests (its queue limit), and was called the knee.
    #[test]
    fn the_knee_is_the_best_step_that_lost_nothing() {
        let r = report(vec![
            step(100.0, 90.0, 0),
            step(200.0, 120.0, 0),
            step(300.0, 150.0, 7),
        ]);
        assert_eq!(r.knee().unwrap().offered, 200.0);
        let all_lost = report(vec![step(100.0, 90.0, 1), step(200.0, 95.0, 2)]);
        assert_eq!(all_lost.knee().unwrap().offered, 200.0);
        assert!(report(Vec::new()).knee().is_none());
    }
}
