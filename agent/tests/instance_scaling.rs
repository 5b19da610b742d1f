//! The local scheduler adds instances while queues wait, and never beyond the memory budget.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use slim_agent::{
    backend::{select_backend, BackendChoice},
    model::ModelFamily,
    outbox::Outbox,
    scheduler::{spawn_scheduler, InstancePolicy, SchedulerConfig, SchedulerReport},
    telemetry::EnergyMeter,
    validate::ValidAssignment,
};
use slim_protocol::{InferRequest, Tensor};

const WIDTH: f32 = 0.5;
const REQUESTS: usize = 96;

fn family() -> Arc<ModelFamily> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/cifar-slimresnet");
    let (backend, _) = select_backend(BackendChoice::Cpu).unwrap();
    Arc::new(ModelFamily::load(&dir, backend.runtime, &Default::default()).unwrap())
}

/// Floods one queue and returns the scheduler's report once every request is answered.
async fn flood(family: Arc<ModelFamily>, budget: u64) -> SchedulerReport {
    let policy = InstancePolicy {
        max_per_queue: 2,
        scale_up_wait: Duration::from_millis(1),
        idle_timeout: Duration::from_secs(60),
        memory_budget_bytes: budget,
        utilization_ceiling: 1.0,
        capacity: 2,
    };
    let (outbox, mut sent) = Outbox::channel();
    let (scheduler, _task) = spawn_scheduler(
        SchedulerConfig {
            agent: "test".into(),
            policy,
            max_batch: 4,
            pace: slim_agent::scheduler::Pace::Real,
            energy: EnergyMeter::model(1.0, 2.0, 2),
            store: None,
            max_queued: 4096,
        },
        outbox,
        Vec::new(),
    );
    let input = Tensor::from_f32(vec![3, 32, 32], &vec![0.1; 3 * 32 * 32]);
    for i in 0..REQUESTS {
        let mut request = InferRequest::new(format!("r{i}"), "cifar-slimresnet", input.clone());
        request.reply_to = Some("replies".into());
        let accepted = scheduler.assign(ValidAssignment {
            sample: family.preprocess(&input),
            key: slim_protocol::RequestKey::new("replies", &request.id),
            payload: None,
            request,
            family: family.clone(),
            width: WIDTH,
            batch_size: 4,
            max_queue_delay_ms: 1,
            router: "test".into(),
            attempt: 0,
            received_at: Instant::now(),
        });
        assert!(accepted.is_ok(), "the scheduler's inbox has room");
    }
    for _ in 0..REQUESTS {
        tokio::time::timeout(Duration::from_secs(120), sent.recv())
            .await
            .expect("every request is answered")
            .unwrap();
    }
    scheduler.report().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_queue_gets_a_second_instance_when_memory_allows() {
    let report = flood(family(), u64::MAX / 4).await;
    assert_eq!(report.completed as usize, REQUESTS);
    assert_eq!(report.peak_instances, 2, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_stay_within_a_small_memory_budget() {
    let family = family();
    let roomy = flood(family.clone(), u64::MAX / 4).await;
    let one_instance = roomy.peak_instance_memory_bytes / roomy.peak_instances as u64;
    let budget = one_instance + one_instance / 2;
    let tight = flood(family, budget).await;
    assert_eq!(
        tight.completed as usize, REQUESTS,
        "everything is still served"
    );
    assert_eq!(
        tight.peak_instances, 1,
        "room for one instance only: {tight:?}"
    );
    assert!(
        tight.peak_instance_memory_bytes <= budget,
        "{tight:?} over {budget}"
    );
    assert!(tight.instance_memory_bytes <= budget);
}
