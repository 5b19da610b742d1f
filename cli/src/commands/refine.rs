//! `slim refine`: does online refinement help on a live cluster? The same workload runs twice on
//! freshly started clusters with the same seed: once with the PPO checkpoint frozen, once
//! refined online from the rewards the agents report. The report puts each window's mean cost
//! side by side, with a paired 95 % interval over the windows.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use slim_client::client::Reply;
use slim_client::load::LoadReport;
use slim_coordinator::config::OnlineSettings;
use slim_protocol::DeviceProfile;
use slim_router::ppo::Checkpoint;
use slim_router::reward::{Outcome, RewardPreset};
use slim_router::{RouterKind, Scales};

use super::calibrate::{LiveClusterArgs, LiveSetup, Measured};
use super::eval::stats::MeanCi;

/// Arguments of `slim refine`.
#[derive(Debug, clap::Args)]
pub struct RefineArgs {
    /// Report to write (Markdown).
    #[arg(long, default_value = "out/refinement.md")]
    pub out: PathBuf,
    /// External broker (e.g. mqtt://127.0.0.1:1883); default: an embedded broker.
    #[arg(long)]
    pub broker: Option<String>,
    /// Model family of the workload.
    #[arg(long, default_value = "cifar-slimresnet")]
    pub model: String,
    /// Arrival rate, requests per second (Poisson).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Sending time of each run (frozen, then refined).
    #[arg(long, default_value = "10m", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// Length of the windows the rolling cost is averaged over.
    #[arg(long, default_value = "1m", value_parser = super::parse_duration)]
    pub window: Duration,
    /// PPO checkpoint both runs start from.
    #[arg(long, default_value = "router/policies/efficiency.safetensors")]
    pub policy: PathBuf,
    /// Cost the windows are scored on (the checkpoint's own preset is what refinement lowers).
    #[arg(long, value_enum, default_value_t = RewardPreset::Efficiency)]
    pub preset: RewardPreset,
    /// Transitions per online update.
    #[arg(long, default_value_t = 64)]
    pub online_batch: usize,
    /// Fraction of the requests that carry the deadline `--budget-ms`.
    #[arg(long, default_value_t = 0.3)]
    pub deadline_share: f64,
    /// Deadline of the constrained requests, ms.
    #[arg(long, default_value_t = 200)]
    pub budget_ms: u32,
    /// The agents.
    #[command(flatten)]
    pub cluster: LiveClusterArgs,
    /// Folder of device profiles.
    #[arg(long, default_value = "profiles")]
    pub profiles: PathBuf,
    /// Folder of model families.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Workload seed (the same for both runs).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl RefineArgs {
    fn setup(&self, online: OnlineSettings, tag: &str) -> LiveSetup {
        LiveSetup {
            broker: self.broker.clone(),
            profiles_dir: self.profiles.clone(),
            models_dir: self.models.clone(),
            model: self.model.clone(),
            agent_profiles: self.cluster.agent_profiles.clone(),
            slowdowns: self.cluster.slowdowns.clone(),
            threads: self.cluster.threads.clone(),
            paced: self.cluster.paced.clone(),
            router: RouterKind::Ppo,
            policy: Some(self.policy.clone()),
            rate: self.rate,
            duration: self.duration,
            seed: self.seed,
            deadline_ms: Some(self.budget_ms),
            constrained_share: self.deadline_share,
            online,
            tag: tag.into(),
        }
    }
}

/// One window's figures of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    /// Mean cost of the results of requests sent in the window (NaN without any).
    pub cost: f64,
    /// Results.
    pub results: usize,
    /// Requests sent in the window answered with an error.
    pub errors: usize,
}

/// The cost of every result of `report`, by the window its request was sent in.
pub fn windows(
    report: &LoadReport,
    window: Duration,
    duration: Duration,
    preset: RewardPreset,
    scales: &Scales,
) -> Vec<Window> {
    let n = (duration.as_secs_f64() / window.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    let mut sums = vec![(0.0f64, 0usize, 0usize); n];
    let weights = preset.weights();
    for o in &report.outcomes {
        let i = ((o.sent_after.as_secs_f64() / window.as_secs_f64()) as usize).min(n - 1);
        match &o.reply {
            Reply::Result(r) => {
                let latency_ms = o.latency.as_secs_f32() * 1000.0;
                let outcome = Outcome {
                    latency_ms,
                    energy_mj: r.energy_j * 1000.0,
                    top1: r.accuracy,
                    deadline_met: o.deadline_ms.map(|d| latency_ms <= d as f32),
                };
                sums[i].0 += f64::from(weights.cost(&outcome, scales));
                sums[i].1 += 1;
            }
            Reply::Error(_) => sums[i].2 += 1,
        }
    }
    sums.into_iter()
        .map(|(sum, results, errors)| Window {
            cost: if results == 0 {
                f64::NAN
            } else {
                sum / results as f64
            },
            results,
            errors,
        })
        .collect()
}

/// The reference scales the coordinator uses (mean over the devices of the widest width's
/// batch-1 latency and energy, from the profiles the agents publish).
pub fn scales(profiles: &[DeviceProfile], model: &str) -> Scales {
    Scales::from_contributions(profiles.iter().filter_map(|p| {
        let widest = p
            .points
            .iter()
            .filter(|q| q.model == model)
            .map(|q| q.width)
            .max_by(f32::total_cmp)?;
        let (latency_ms, power_w) = p.cost(model, widest, 1)?;
        Some((latency_ms, power_w * latency_ms))
    }))
}

/// Refined minus frozen, per window where both have results, and over the last third.
pub fn paired(frozen: &[Window], refined: &[Window]) -> (MeanCi, MeanCi) {
    let diffs: Vec<f64> = frozen
        .iter()
        .zip(refined)
        .map(|(f, r)| r.cost - f.cost)
        .filter(|d| d.is_finite())
        .collect();
    let tail = &diffs[diffs.len() - diffs.len().div_ceil(3)..];
    (MeanCi::of(&diffs), MeanCi::of(tail))
}

/// Runs `slim refine`.
pub async fn run(args: RefineArgs) -> anyhow::Result<()> {
    super::require_path(&args.profiles, "the profiles folder", "--profiles")?;
    super::require_path(&args.models, "the models folder", "--models")?;
    super::require_path(&args.policy, "the PPO checkpoint", "--policy")?;
    anyhow::ensure!(
        args.window > Duration::ZERO && args.window <= args.duration,
        "--window must be positive and at most --duration"
    );
    let frozen_setup = args.setup(OnlineSettings::default(), "frozen");
    frozen_setup.check()?;
    let profiles = frozen_setup.agent_profiles()?;
    let scales = scales(&profiles, &args.model);
    let save = args.out.with_extension("safetensors");
    if let Some(parent) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let online = OnlineSettings {
        enabled: true,
        save: Some(save.clone()),
        learner: slim_router::ppo::online::OnlineConfig {
            batch: args.online_batch,
            ..Default::default()
        },
    };
    println!(
        "slim refine: `{}` at {:.0} req/s for {} per run, frozen then refined, seed {}",
        args.model,
        args.rate,
        super::human_duration(args.duration),
        args.seed
    );
    let Measured {
        report: frozen,
        pace: frozen_pace,
        ..
    } = frozen_setup.run().await.context("the frozen run")?;
    println!("frozen run done: {} sent", frozen.sent);
    let Measured {
        report: refined,
        pace: refined_pace,
        ..
    } = args
        .setup(online, "refined")
        .run()
        .await
        .context("the refined run")?;
    let updates = Checkpoint::load(&save)
        .ok()
        .and_then(|c| c.meta.online)
        .map_or((0, 0), |o| (o.updates, o.transitions));
    println!(
        "refined run done: {} sent, {} updates applied",
        refined.sent, updates.0
    );
    let w = |r: &LoadReport| windows(r, args.window, args.duration, args.preset, &scales);
    let lost = [&frozen, &refined].map(|r| r.sent.saturating_sub(r.outcomes.len()));
    let runs = Runs {
        windows: [&w(&frozen), &w(&refined)],
        lost,
        pace: [frozen_pace, refined_pace],
    };
    let text = report(&args, &runs, updates, &save);
    std::fs::write(&args.out, &text).with_context(|| format!("writing {}", args.out.display()))?;
    print!("{text}");
    println!("wrote {}", args.out.display());
    Ok(())
}

/// What the frozen and the refined run measured, in that order.
struct Runs<'a> {
    windows: [&'a [Window]; 2],
    /// Requests sent and never answered.
    lost: [usize; 2],
    /// Paced batches run and missed.
    pace: [slim_agent::scheduler::PaceCount; 2],
}

/// The Markdown report: set-up, the windows side by side, the paired difference and a verdict.
fn report(
    args: &RefineArgs,
    runs: &Runs,
    (updates, transitions): (u64, u64),
    save: &std::path::Path,
) -> String {
    let (lost, pace) = (runs.lost, runs.pace);
    let runs = runs.windows;
    use std::fmt::Write as _;
    let mut d = String::from("# Online refinement on a live cluster\n\n");
    let _ = writeln!(d, "Written by `slim refine` on {}. Reproduce: `slim refine --rate {} --duration {} --window {} --seed {} --online-batch {} --out {}` with the same cluster flags.\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        args.rate, super::human_duration(args.duration), super::human_duration(args.window), args.seed, args.online_batch, args.out.display());
    let _ = writeln!(d, "Agents: {}. Workload: `{}` at {:.0} requests/s (Poisson) for {} per run, {:.0} % of the requests with a {} ms deadline. The coordinator routes with the PPO checkpoint `{}`: frozen in the first run, refined online in the second ({} transitions per update; **{updates} updates applied** from {transitions} transitions; the refined checkpoint is `{}`). Each run starts a fresh cluster with the same workload seed, so the requests and their send times are the same. A window's cost is the `{}` preset's request cost, computed by the client from its end-to-end latency, the agents' modelled energy and the manifest accuracy, over the results of the requests sent in that window; error replies and lost requests are counted apart.\n",
        super::eval::agents_text(&args.cluster), args.model, args.rate, super::human_duration(args.duration),
        100.0 * args.deadline_share, args.budget_ms, args.policy.display(), args.online_batch, save.display(), args.preset.as_str());
    d.push_str("| window | frozen mean cost (results, errors) | refined mean cost (results, errors) | refined − frozen |\n|---|---|---|---|\n");
    for (i, (f, r)) in runs[0].iter().zip(runs[1]).enumerate() {
        let _ = writeln!(
            d,
            "| {} | {:.4} ({}, {}) | {:.4} ({}, {}) | {:+.4} |",
            i + 1,
            f.cost,
            f.results,
            f.errors,
            r.cost,
            r.results,
            r.errors,
            r.cost - f.cost
        );
    }
    let (all, tail) = paired(runs[0], runs[1]);
    let verdict = |m: &MeanCi| {
        if !m.half.is_finite() {
            "too few windows to tell"
        } else if m.mean + m.half < 0.0 {
            "refinement **lowered** the cost"
        } else if m.mean - m.half > 0.0 {
            "refinement **raised** the cost"
        } else {
            "**no significant difference**: refinement did not help on this workload"
        }
    };
    let _ = writeln!(d, "\nRefined − frozen, paired by window (Student t 95 %): {} over all {} windows ({}); {} over the last third ({}). Lost (sent, never answered): frozen {}, refined {}.", all.show(4), all.n, verdict(&all), tail.show(4), verdict(&tail), lost[0], lost[1]);
    if args.cluster.paced.iter().any(|p| *p) {
        let _ = writeln!(d, "\nPaced batches that took longer on this host than the emulated device's latency (so ran slower than the emulation): frozen {} of {}, refined {} of {}.", pace[0].missed, pace[0].batches, pace[1].missed, pace[1].batches);
    }
    if updates == 0 {
        d.push_str("\nNo update was applied, so the refined run routed with the checkpoint as shipped: any difference is run-to-run noise.\n");
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use slim_client::load::Outcome as Sent;
    use slim_protocol::{InferResult, Timings};

    fn result(energy_j: f32) -> Reply {
        Reply::Result(InferResult {
            v: 1,
            id: "r".into(),
            model: "m".into(),
            agent: "a".into(),
            width: 1.0,
            batch_size: 1,
            top_k: Vec::new(),
            accuracy: 0.7,
            timings: Timings::default(),
            energy_j,
            energy_source: slim_protocol::EnergySource::Model,
            router: String::new(),
            emulated: false,
        })
    }

    fn sent(after_s: u64, latency_ms: u64, reply: Reply) -> Sent {
        Sent {
            latency: Duration::from_millis(latency_ms),
            reply,
            label: None,
            sent_after: Duration::from_secs(after_s),
            deadline_ms: None,
        }
    }

    #[test]
    fn results_are_costed_in_the_window_their_request_was_sent_in() {
        let report = LoadReport {
            sent: 4,
            outcomes: vec![
                sent(0, 10, result(0.0)),
                sent(5, 30, result(0.0)),
                sent(15, 10, result(0.0)),
                sent(
                    25,
                    10,
                    Reply::Error(slim_protocol::ErrorReply::new(
                        Some("r".into()),
                        slim_protocol::ErrorCode::Overloaded,
                        "busy",
                        "agent:a",
                    )),
                ),
            ],
            ..LoadReport::default()
        };
        let scales = Scales {
            latency_ms: 10.0,
            energy_mj: 1.0,
        };
        let w = windows(
            &report,
            Duration::from_secs(10),
            Duration::from_secs(30),
            RewardPreset::Efficiency,
            &scales,
        );
        assert_eq!(w.len(), 3);
        assert_eq!((w[0].results, w[1].results, w[2].results), (2, 1, 0));
        assert!(w[0].cost > w[1].cost, "a slower window costs more: {w:?}");
        assert!(w[2].cost.is_nan() && w[2].errors == 1);
    }

    #[test]
    fn the_paired_difference_skips_empty_windows_and_keeps_the_last_third() {
        let win = |cost| Window {
            cost,
            results: 1,
            errors: 0,
        };
        let frozen = [win(2.0), win(2.0), win(f64::NAN), win(2.0)];
        let refined = [win(1.0), win(3.0), win(1.0), win(1.5)];
        let (all, tail) = paired(&frozen, &refined);
        assert_eq!(all.n, 3);
        assert!((all.mean - (-1.0 + 1.0 - 0.5) / 3.0).abs() < 1e-9);
        assert_eq!((tail.n, tail.mean), (1, -0.5));
    }
}
