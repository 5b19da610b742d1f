//! The scheduler charges a batch, under the power model, the cores its instance's thread count
//! keeps busy: a family prepared with 2 threads on a 2-core device gets all of the full-load
//! power for its compute time, one prepared with 1 thread half of it.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use slim_agent::{
    backend::{select_backend, BackendChoice},
    model::{ModelFamily, PlanOptions},
    outbox::Outbox,
    scheduler::{spawn_scheduler, InstancePolicy, SchedulerConfig},
    telemetry::EnergyMeter,
    validate::ValidAssignment,
};
use slim_protocol::{decode, EnergySource, InferRequest, InferResult, Tensor};

const MAX_W: f32 = 40.0;
const CORES: usize = 2;

fn digits(threads: usize) -> Arc<ModelFamily> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/digits");
    let (backend, _) = select_backend(BackendChoice::Cpu).unwrap();
    let options = PlanOptions {
        threads,
        ..PlanOptions::default()
    };
    Arc::new(ModelFamily::load(&dir, backend.runtime, &options).unwrap())
}

/// Runs one request alone through a scheduler with the power model of a 2-core device.
async fn run_one(family: Arc<ModelFamily>) -> InferResult {
    let policy = InstancePolicy {
        max_per_queue: 1,
        scale_up_wait: Duration::from_millis(1),
        idle_timeout: Duration::from_secs(60),
        memory_budget_bytes: u64::MAX / 4,
        utilization_ceiling: 1.0,
        capacity: 1,
    };
    let (outbox, mut sent) = Outbox::channel();
    let (scheduler, _task) = spawn_scheduler(
        SchedulerConfig {
            agent: "test".into(),
            policy,
            max_batch: 1,
            pace: slim_agent::scheduler::Pace::Real,
            energy: EnergyMeter::model(10.0, MAX_W, CORES),
            store: None,
            max_queued: 16,
        },
        outbox,
        Vec::new(),
    );
    let input = Tensor::from_f32(vec![1, 8, 8], &[0.1; 64]);
    let mut request = InferRequest::new("r", "digits", input.clone());
    request.reply_to = Some("replies".into());
    let accepted = scheduler.assign(ValidAssignment {
        sample: family.preprocess(&input),
        key: slim_protocol::RequestKey::new("replies", &request.id),
        payload: None,
        request,
        family: family.clone(),
        width: 0.5,
        batch_size: 1,
        max_queue_delay_ms: 0,
        router: "test".into(),
        attempt: 0,
        received_at: Instant::now(),
    });
    assert!(accepted.is_ok(), "the scheduler's inbox has room");
    let out = tokio::time::timeout(Duration::from_secs(120), sent.recv())
        .await
        .expect("the request is answered")
        .unwrap();
    decode(&out.payload).expect("an InferResult")
}

/// Joules the model charges `threads` busy cores for `compute_ms`.
fn expected_j(compute_ms: f32, threads: usize) -> f32 {
    compute_ms / 1000.0 * MAX_W * threads.min(CORES) as f32 / CORES as f32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_charged_the_cores_of_its_instances_threads() {
    for threads in [1, 2] {
        let family = digits(threads);
        assert_eq!(family.threads(), threads);
        let result = run_one(family).await;
        assert_eq!(result.energy_source, EnergySource::Model);
        assert_eq!(result.batch_size, 1);
        let want = expected_j(result.timings.compute_ms, threads);
        assert!(
            (result.energy_j - want).abs() <= 1e-3 * want + 1e-9,
            "{threads} thread(s): {} J for {} ms, want {want} J",
            result.energy_j,
            result.timings.compute_ms
        );
    }
}
