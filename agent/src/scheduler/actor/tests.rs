//! The actor driven through its handle alone: no broker, an outbox that is a channel.

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use slim_protocol::{decode, ErrorCode, ErrorReply, InferRequest, InferResult, RequestKey, Tensor};
use tokio::sync::mpsc;

use super::*;
use crate::{
    backend::{select_backend, BackendChoice},
    model::ModelFamily,
    outbox::Outgoing,
    store::Store,
};

const WIDTH: f32 = 0.25;
const WAIT: Duration = Duration::from_secs(60);

fn digits() -> Arc<ModelFamily> {
    static FAMILY: OnceLock<Arc<ModelFamily>> = OnceLock::new();
    FAMILY
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/digits");
            let (backend, _) = select_backend(BackendChoice::Cpu).unwrap();
            Arc::new(ModelFamily::load(&dir, backend.runtime, &Default::default()).unwrap())
        })
        .clone()
}

fn assignment(id: &str) -> ValidAssignment {
    let family = digits();
    let input = Tensor::from_u8(vec![1, 8, 8], vec![128; 64]);
    let mut request = InferRequest::new(id, "digits", input.clone());
    request.reply_to = Some("replies".into());
    ValidAssignment {
        sample: family.preprocess(&input),
        key: RequestKey::new("replies", id),
        payload: Some(format!("assignment {id}").into_bytes()),
        request,
        family,
        width: WIDTH,
        batch_size: 4,
        max_queue_delay_ms: 1,
        router: "test".into(),
        attempt: 0,
        received_at: Instant::now(),
    }
}

/// A scheduler whose queues may load `max_per_queue` instances each.
fn scheduler(
    max_per_queue: usize,
    max_queued: usize,
    store: Option<Store>,
) -> (SchedulerHandle, mpsc::UnboundedReceiver<Outgoing>) {
    let energy = EnergyMeter::model(1.0, 2.0, 1);
    scheduler_with(energy, max_per_queue, max_queued, store)
}

fn scheduler_with(
    energy: EnergyMeter,
    max_per_queue: usize,
    max_queued: usize,
    store: Option<Store>,
) -> (SchedulerHandle, mpsc::UnboundedReceiver<Outgoing>) {
    let (outbox, sent) = Outbox::channel();
    let (handle, _task) = spawn_scheduler(
        SchedulerConfig {
            agent: "test".into(),
            policy: InstancePolicy {
                max_per_queue,
                scale_up_wait: Duration::from_millis(1),
                idle_timeout: Duration::from_secs(60),
                memory_budget_bytes: 1 << 30,
                utilization_ceiling: 1.0,
                capacity: 1,
            },
            max_batch: 4,
            slowdown: 1.0,
            store,
            energy,
            max_queued,
        },
        outbox,
        Vec::new(),
    );
    (handle, sent)
}

/// Reports until `taken` says every assignment sent was taken from the inbox.
async fn report_once_taken(
    handle: &SchedulerHandle,
    taken: impl Fn(&SchedulerReport) -> bool,
) -> SchedulerReport {
    let deadline = Instant::now() + WAIT;
    loop {
        let report = handle.report().await;
        if taken(&report) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "assignments not taken: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn temp_store() -> (Store, PathBuf) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("slim-actor-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (Store::open(&dir).unwrap(), dir)
}

#[test]
fn a_prefix_is_taken_while_it_fits_and_the_rest_stays() {
    let mut items = vec![3, 4, 5, 1];
    let mut budget = 8;
    let taken = take_while_fits(&mut items, |&n| {
        let ok = n <= budget;
        if ok {
            budget -= n;
        }
        ok
    });
    assert_eq!(taken, vec![3, 4]);
    assert_eq!(items, vec![5, 1], "order kept for the next page");
}

#[tokio::test]
async fn refusals_are_counted_by_code_and_reported_to_telemetry_without_draining() {
    let (handle, _sent) = scheduler(1, 16, None);
    handle.rejected(ErrorCode::BadShape);
    handle.rejected(ErrorCode::BadShape);
    handle.rejected(ErrorCode::Unauthenticated);

    let expected = HashMap::from([(ErrorCode::BadShape, 2), (ErrorCode::Unauthenticated, 1)]);
    assert_eq!(handle.rejections().await, expected);
    assert_eq!(handle.report().await.rejections, expected);
    assert_eq!(
        handle.report().await.rejections,
        expected,
        "counts since start: a report does not reset them"
    );
}

#[tokio::test]
async fn requests_wait_in_their_queue_while_no_instance_may_load() {
    let (handle, mut sent) = scheduler(0, 16, None);
    for id in ["r0", "r1", "r2"] {
        assert!(handle.assign(assignment(id)).is_ok());
    }
    let report = report_once_taken(&handle, |r| r.outstanding == 3).await;
    assert_eq!(report.queues.len(), 1, "{:?}", report.queues);
    let queue = &report.queues[0];
    assert_eq!((queue.model.as_str(), queue.width), ("digits", WIDTH));
    assert_eq!(queue.depth, 3);
    assert_eq!(queue.instances, 0);
    assert_eq!(report.completed, 0);
    assert!(
        sent.try_recv().is_err(),
        "nothing is answered without an instance"
    );
}

#[tokio::test]
async fn a_duplicate_of_a_queued_request_is_ignored() {
    let (handle, mut sent) = scheduler(0, 16, None);
    for id in ["r0", "r0", "r1"] {
        assert!(handle.assign(assignment(id)).is_ok());
    }
    let report = report_once_taken(&handle, |r| r.outstanding as u64 + r.duplicates == 3).await;
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.outstanding, 2);
    assert_eq!(report.queues[0].depth, 2);
    assert!(
        sent.try_recv().is_err(),
        "a duplicate gets no reply of its own"
    );
}

#[tokio::test]
async fn beyond_max_queued_an_assignment_is_answered_overloaded() {
    let (handle, mut sent) = scheduler(0, 2, None);
    for id in ["r0", "r1", "r2"] {
        assert!(handle.assign(assignment(id)).is_ok());
    }
    let report = report_once_taken(&handle, |r| r.outstanding as u64 + r.overloaded == 3).await;
    assert_eq!((report.outstanding, report.overloaded), (2, 1));
    let reply = sent.try_recv().expect("the refused request is answered");
    assert_eq!(reply.topic, "replies");
    let error: ErrorReply = decode(&reply.payload).unwrap();
    assert_eq!(error.code, ErrorCode::Overloaded);
    assert_eq!(error.id.as_deref(), Some("r2"), "the one past the limit");
    assert_eq!(error.origin, "agent:test");
}

#[tokio::test]
async fn an_accepted_request_is_stored_until_it_is_answered() {
    let (store, dir) = temp_store();
    let (waiting, _sent) = scheduler(0, 16, Some(store.clone()));
    assert!(waiting.assign(assignment("r0")).is_ok());
    report_once_taken(&waiting, |r| r.outstanding == 1).await;
    assert_eq!(
        store.unanswered().unwrap(),
        vec![(RequestKey::new("replies", "r0"), b"assignment r0".to_vec())]
    );
    drop(waiting);

    let (serving, mut sent) = scheduler(1, 16, Some(store.clone()));
    assert!(serving.assign(assignment("r1")).is_ok());
    let answer = tokio::time::timeout(WAIT, sent.recv())
        .await
        .expect("answered")
        .unwrap();
    let result: InferResult = decode(&answer.payload).unwrap();
    assert_eq!(result.id, "r1");
    // The reply leaves before the store is updated; a report comes after both.
    serving.report().await;
    let left: Vec<String> = store
        .unanswered()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.id)
        .collect();
    assert_eq!(left, ["r0"], "r1 is forgotten once answered");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_stored_request_is_forgotten_on_command() {
    let (store, dir) = temp_store();
    let (handle, _sent) = scheduler(0, 16, Some(store.clone()));
    // Accepted by an earlier run and no longer servable (say its model is gone).
    let gone = RequestKey::new("replies", "gone");
    store.accept(&gone, b"gone").unwrap();
    store
        .accept(&RequestKey::new("replies", "keep"), b"keep")
        .unwrap();
    handle.forget_stored(gone);
    // Commands are handled in order: once this answers, the forget is done.
    handle.rejections().await;
    let left: Vec<String> = store
        .unanswered()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.id)
        .collect();
    assert_eq!(left, ["keep"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_answered_request_is_reported_done_once_with_its_batch() {
    let (handle, mut sent) = scheduler(1, 16, None);
    assert!(handle.assign(assignment("r0")).is_ok());
    let answer = tokio::time::timeout(WAIT, sent.recv())
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(answer.topic, "replies");
    let result: InferResult = decode(&answer.payload).unwrap();
    assert_eq!((result.id.as_str(), result.width), ("r0", WIDTH));
    assert_eq!(result.top_k.len(), 5);

    let wire = RequestKey::new("replies", "r0").wire();
    let first = handle.report().await;
    assert_eq!((first.completed, first.outstanding), (1, 0));
    assert_eq!(first.done, std::slice::from_ref(&wire));
    assert_eq!(first.batches.len(), 1);
    assert_eq!(first.batches[0].requests, [wire]);
    assert_eq!(first.peak_instances, 1, "one instance was loaded for it");
    let second = handle.report().await;
    assert!(
        second.done.is_empty() && second.batches.is_empty(),
        "{second:?}"
    );
    assert_eq!(second.completed, 1, "totals are since start");
}

#[tokio::test]
async fn a_batch_is_attributed_the_power_telemetry_last_measured() {
    let silent = crate::telemetry::SensorReading {
        power_w: Some(0.0),
        ..Default::default()
    };
    let meter = EnergyMeter::measured(slim_protocol::EnergySource::Nvml, &silent, 0.0, 0.0, 1);
    let (handle, mut sent) = scheduler_with(meter, 1, 16, None);
    handle.attribute_power(1000.0);
    assert!(handle.assign(assignment("r0")).is_ok());
    let answer = tokio::time::timeout(WAIT, sent.recv())
        .await
        .expect("answered")
        .unwrap();
    let result: InferResult = decode(&answer.payload).unwrap();
    assert_eq!(result.energy_source, slim_protocol::EnergySource::Nvml);
    assert!(
        result.energy_j > 0.0,
        "1000 W for the batch's run, not the 0 W the meter started from: {}",
        result.energy_j
    );
}
