//! Online refinement on a synthetic two-device cluster where one device is always better.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::ppo::checkpoint::{tests::meta, Checkpoint};
use crate::ppo::net::PolicyWeights;
use crate::reward::Outcome;
use crate::{BatchOption, DeviceView, Observation, RouteRequest, Scales, WidthOption};

/// One width, one batch size: the policy chooses between the two devices only.
fn device(agent: &str, latency_ms: f32, power_w: f32) -> DeviceView {
    DeviceView {
        agent: agent.into(),
        online: true,
        outstanding: 0,
        queue_depth: 0,
        backlog_ms: 0.0,
        instances: 1,
        cpu_util: 0.2,
        gpu_util: None,
        mem_free_bytes: 1 << 30,
        power_w,
        max_batch: 8,
        slowdown: 1.0,
        version: 0,
        arrival_rate_per_s: 0.0,
        widths: vec![WidthOption {
            width: 1.0,
            top1: 0.95,
            flops: 1_000_000,
            recent_latency_ms: None,
            queue_depth: 0,
            oldest_wait_ms: 0.0,
            batches: vec![BatchOption {
                batch: 1,
                latency_ms,
                power_w,
                mem_bytes: 0,
            }],
        }],
    }
}

fn cluster() -> Observation {
    Observation {
        devices: vec![device("fast", 1.0, 5.0), device("slow", 4.0, 20.0)],
    }
}

/// What each device really delivers: the fast one is cheaper on latency and energy.
fn measured(device: usize) -> Measured {
    match device {
        0 => Measured {
            queue_ms: 0.5,
            compute_ms: 1.0,
            batch_energy_j: 0.005,
            batch_size: 1,
        },
        _ => Measured {
            queue_ms: 6.0,
            compute_ms: 4.0,
            batch_energy_j: 0.08,
            batch_size: 1,
        },
    }
}

/// A near-uniform policy (no greedy prior), as an untrained checkpoint.
fn learner(config: OnlineConfig) -> OnlineLearner {
    let weights = PolicyWeights::init(16, &mut StdRng::seed_from_u64(11));
    let checkpoint = Checkpoint {
        weights,
        meta: meta(),
    };
    OnlineLearner::new(checkpoint, config, 5)
}

/// Routes and rewards `n` requests; returns their mean reward.
fn traffic(learner: &mut OnlineLearner, round: usize, n: usize, now: Instant) -> f32 {
    let (obs, request) = (cluster(), RouteRequest::default());
    let mut total = 0.0;
    for i in 0..n {
        let key = format!("r{round}-{i}");
        let route = learner.route(&obs, &request, &key, now).unwrap();
        total += learner.complete(&key, &measured(route.device)).unwrap();
    }
    total / n as f32
}

#[test]
fn the_better_rewarded_device_becomes_more_likely() {
    let config = OnlineConfig {
        batch: 64,
        learning_rate: 3e-3,
        minibatch: 32,
        ..OnlineConfig::default()
    };
    let mut learner = learner(config);
    let (obs, request) = (cluster(), RouteRequest::default());
    let before = learner.probabilities(&obs, &request)[0];
    let now = Instant::now();
    let mut rewards = Vec::new();
    for round in 0..12 {
        rewards.push(traffic(&mut learner, round, 64, now));
        let job = learner.take_job().expect("a full batch");
        assert_eq!(job.len(), 64);
        let refined = job.run();
        assert!(refined.report.kl.is_finite() && refined.report.steps > 0);
        learner.apply(refined);
    }
    let after = learner.probabilities(&obs, &request)[0];
    let stats = learner.stats();
    println!(
        "P(fast) {before:.3} -> {after:.3}; mean reward {:.4} (first 64) -> {:.4} (last 64); \
         {} updates applied, {} refused, last KL {:.5}",
        rewards[0],
        rewards[11],
        stats.updates,
        stats.rejected,
        learner.last_update().unwrap().kl
    );
    assert!((before - 0.5).abs() < 0.05, "starts near uniform: {before}");
    assert!(
        after > before + 0.15,
        "P(fast) went from {before} to {after}"
    );
    assert!(rewards[11] > rewards[0], "mean reward: {rewards:?}");
    assert!(stats.updates >= 10, "{stats:?}");
    assert_eq!(stats.transitions, 12 * 64);
    assert_eq!((stats.pending, stats.ready), (0, 0));
}

#[test]
fn the_kl_guard_refuses_a_huge_update() {
    let config = OnlineConfig {
        batch: 64,
        learning_rate: 0.5,
        target_kl: f64::INFINITY,
        max_kl: 0.01,
        ..OnlineConfig::default()
    };
    let mut learner = learner(config);
    let policy = learner.policy().clone();
    traffic(&mut learner, 0, 64, Instant::now());
    let refined = learner.take_job().unwrap().run();
    let report = refined.report.clone();
    assert!(!report.applied && refined.weights.is_none(), "{report:?}");
    assert!(report.kl > 0.01, "{report:?}");
    assert!(report.refused.as_deref().unwrap().contains("max_kl"));
    learner.apply(refined);
    assert_eq!(learner.policy(), &policy, "the policy is unchanged");
    assert_eq!((learner.stats().updates, learner.stats().rejected), (0, 1));
}

#[test]
fn the_live_reward_is_the_training_reward() {
    let mut learner = learner(OnlineConfig::default());
    let obs = cluster();
    let request = RouteRequest {
        deadline_ms: Some(5),
        ..RouteRequest::default()
    };
    let route = learner.route(&obs, &request, "k", Instant::now()).unwrap();
    let m = measured(route.device);
    let reward = learner.complete("k", &m).unwrap();
    let latency_ms = m.queue_ms + m.compute_ms;
    let outcome = Outcome {
        latency_ms,
        energy_mj: m.batch_energy_j * 1000.0,
        top1: 0.95,
        deadline_met: Some(latency_ms <= 5.0),
    };
    let checkpoint = meta();
    let cost = checkpoint
        .weights
        .cost(&outcome, &Scales::from_observation(&obs));
    assert_eq!(reward, checkpoint.config.reward(cost));
    assert!(reward < 0.0);
}

#[test]
fn lost_rewards_expire_and_memory_stays_bounded() {
    let config = OnlineConfig {
        pending_timeout_ms: 1000,
        // Room for about 100 two-candidate decisions.
        max_memory_mb: 0,
        ..OnlineConfig::default()
    };
    let mut learner = learner(config);
    let (obs, request) = (cluster(), RouteRequest::default());
    let t0 = Instant::now();
    learner.route(&obs, &request, "a", t0).unwrap();
    assert_eq!(learner.stats().untracked, 1, "a zero budget tracks nothing");

    let mut learner = learner_with_room(100);
    for i in 0..150 {
        learner.route(&obs, &request, &format!("r{i}"), t0).unwrap();
    }
    let stats = learner.stats();
    assert_eq!(
        (stats.decisions, stats.pending, stats.untracked),
        (150, 100, 50)
    );
    // Placed again before an answer: the first decision is dropped, not kept twice.
    learner.route(&obs, &request, "r0", t0).unwrap();
    assert_eq!((learner.stats().pending, learner.stats().expired), (100, 1));
    assert_eq!(learner.complete("never-routed", &measured(0)), None);
    assert_eq!(learner.expire(t0 + Duration::from_millis(900)), 0);
    assert_eq!(learner.expire(t0 + Duration::from_millis(1100)), 100);
    let stats = learner.stats();
    assert_eq!((stats.pending, stats.expired), (0, 101));
    // The memory is free again.
    learner.route(&obs, &request, "again", t0).unwrap();
    assert_eq!(learner.stats().pending, 1);
}

/// A learner whose memory budget holds `decisions` two-candidate decisions.
fn learner_with_room(decisions: usize) -> OnlineLearner {
    let mut l = learner(OnlineConfig {
        pending_timeout_ms: 1000,
        max_memory_mb: 1,
        ..OnlineConfig::default()
    });
    l.set_memory_floats(decisions * 2 * crate::ppo::features::FEATURES);
    l
}

#[test]
fn unusable_measurements_are_counted_not_learned() {
    let mut learner = learner(OnlineConfig::default());
    let (obs, request) = (cluster(), RouteRequest::default());
    learner.route(&obs, &request, "k", Instant::now()).unwrap();
    let bad = Measured {
        compute_ms: f32::NAN,
        ..measured(0)
    };
    assert_eq!(learner.complete("k", &bad), None);
    let stats = learner.stats();
    assert_eq!((stats.invalid, stats.transitions, stats.pending), (1, 0, 0));
    assert!(learner.take_job().is_none());
}

#[test]
fn settings_that_cannot_work_are_refused() {
    assert!(OnlineConfig::default().check().is_ok());
    for bad in [
        OnlineConfig {
            batch: 0,
            ..OnlineConfig::default()
        },
        OnlineConfig {
            learning_rate: f64::NAN,
            ..OnlineConfig::default()
        },
        OnlineConfig {
            learning_rate: -1.0,
            ..OnlineConfig::default()
        },
        OnlineConfig {
            max_kl: f64::NAN,
            ..OnlineConfig::default()
        },
    ] {
        assert!(bad.check().is_err(), "{bad:?}");
    }
}

#[test]
fn the_online_value_target_is_trainings_gae_return_in_routing_order() {
    let mut learner = learner(OnlineConfig {
        batch: 8,
        ..OnlineConfig::default()
    });
    let (obs, request) = (cluster(), RouteRequest::default());
    let now = Instant::now();
    // Route 8 requests, then report their batches in reverse order.
    let routes: Vec<usize> = (0..8)
        .map(|i| {
            learner
                .route(&obs, &request, &format!("k{i}"), now)
                .unwrap()
                .device
        })
        .collect();
    for i in (0..8).rev() {
        learner.complete(&format!("k{i}"), &measured(routes[i]));
    }
    let job = learner.take_job().expect("a full batch");
    let (values, ret, adv) = job.targets();
    // Offline training's target over the same decisions, in the order they were routed.
    let mut order: Vec<usize> = (0..8).collect();
    order.sort_by_key(|&i| job.batch[i].seq);
    let rewards: Vec<f32> = order.iter().map(|&i| job.batch[i].reward).collect();
    let sorted: Vec<f32> = order.iter().map(|&i| values[i]).collect();
    let (g, l) = (job.training.gamma, job.training.gae_lambda);
    assert!(g > 0.0, "the checkpoint's gamma is used, not a bandit's 0");
    let (a, r) = crate::ppo::update::gae(&rewards, &sorted, &[false; 8], sorted[7], g, l);
    for (k, &i) in order.iter().enumerate() {
        assert!((ret[i] - r[k]).abs() < 1e-6 && (adv[i] - a[k]).abs() < 1e-6);
    }
    // The batch arrived in reverse routing order: the target is not the bare reward.
    assert!(job.batch[0].seq > job.batch[7].seq);
    assert!(job
        .batch
        .iter()
        .zip(&ret)
        .any(|(t, r)| (t.reward - r).abs() > 1e-4));
}
