//! Online refinement's counters and its latest update, exported only while it runs.

use prometheus::proto::MetricFamily;

use super::family::Family;
use crate::online::OnlineView;

/// A value of the online view, read at scrape time; `None` leaves the family out.
type Read = fn(&OnlineView) -> Option<f64>;

/// Online refinement's running totals: name, help and where the view keeps the value.
const TOTALS: [(&str, &str, Read); 8] = [
    (
        "slim_router_online_updates_total",
        "Online policy updates applied.",
        |o| Some(o.stats.updates as f64),
    ),
    (
        "slim_router_online_rejected_total",
        "Online policy updates refused by the KL guard (or with weights not finite); the policy was kept.",
        |o| Some(o.stats.rejected as f64),
    ),
    (
        "slim_router_online_transitions_total",
        "Live decisions whose reward arrived (from agent telemetry).",
        |o| Some(o.stats.transitions as f64),
    ),
    (
        "slim_router_online_expired_total",
        "Remembered decisions whose reward never came (timed out, or placed again first).",
        |o| Some(o.stats.expired as f64),
    ),
    (
        "slim_router_online_untracked_total",
        "Decisions routed but not remembered (memory bound reached, or a full batch waiting).",
        |o| Some(o.stats.untracked as f64),
    ),
    (
        "slim_router_online_invalid_total",
        "Telemetry batch figures that could not be a reward (not finite).",
        |o| Some(o.stats.invalid as f64),
    ),
    (
        "slim_router_online_checkpoint_writes_total",
        "Refined checkpoints written (--online-save).",
        |o| Some(o.saves as f64),
    ),
    (
        "slim_router_online_checkpoint_write_errors_total",
        "Refined checkpoints that could not be written.",
        |o| Some(o.save_errors as f64),
    ),
];

/// Online refinement's gauges; the latest update's figures exist only once one has run.
const GAUGES: [(&str, &str, Read); 4] = [
    (
        "slim_router_online_pending",
        "Decisions waiting for their reward.",
        |o| Some(o.stats.pending as f64),
    ),
    (
        "slim_router_reward_mean",
        "Mean live reward of the latest online update's batch (the training reward: higher is better).",
        |o| o.last_update.as_ref().map(|u| f64::from(u.reward_mean)),
    ),
    (
        "slim_router_cost_mean",
        "Mean request cost of the latest online update's batch (the preset's cost: lower is better).",
        |o| o.last_update.as_ref().map(|u| f64::from(u.cost_mean)),
    ),
    (
        "slim_router_online_kl",
        "KL(old || new) of the latest online update over its batch.",
        |o| o.last_update.as_ref().map(|u| f64::from(u.kl)),
    ),
];

/// The online refinement families, with their readers.
#[derive(Debug)]
pub(super) struct OnlineFamilies(Vec<(Family, Read)>);

impl OnlineFamilies {
    pub(super) fn new() -> Self {
        let totals = TOTALS.map(|(name, help, read)| (Family::counter(name, help, &[]), read));
        let gauges = GAUGES.map(|(name, help, read)| (Family::gauge(name, help, &[]), read));
        Self(totals.into_iter().chain(gauges).collect())
    }

    pub(super) fn families(&self) -> impl Iterator<Item = &Family> {
        self.0.iter().map(|(family, _)| family)
    }

    /// Adds the samples of `online` (when refinement runs) to `out`.
    pub(super) fn collect(&self, online: Option<&OnlineView>, out: &mut Vec<MetricFamily>) {
        let Some(online) = online else { return };
        for (family, read) in &self.0 {
            if let Some(value) = read(online) {
                let mut samples = family.samples();
                samples.set(&[], value);
                out.push(samples.finish());
            }
        }
    }
}
