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

/// A scheduler under test: its handle, and the receiving end of its outbox.
struct Fixture {
    handle: SchedulerHandle,
    sent: mpsc::UnboundedReceiver<Outgoing>,
}

impl Fixture {
    /// Queues that may load `max_per_queue` instances each, at most `max_queued` assignments
    /// waiting, no store, energy modelled.
    fn new(max_per_queue: usize, max_queued: usize) -> Self {
        Self::spawn(max_per_queue, max_queued, None, modelled_energy())
    }

    /// One instance per queue may load, with `store`.
    fn with_store(max_per_queue: usize, store: &Store) -> Self {
        Self::spawn(max_per_queue, 16, Some(store.clone()), modelled_energy())
    }

    /// One instance per queue may load, energy from `energy`.
    fn with_energy(energy: EnergyMeter) -> Self {
        Self::spawn(1, 16, None, energy)
    }

    fn spawn(
        max_per_queue: usize,
        max_queued: usize,
        store: Option<Store>,
        energy: EnergyMeter,
    ) -> Self {
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
                pace: crate::scheduler::Pace::Real,
                store,
                energy,
                max_queued,
            },
            outbox,
            Vec::new(),
        );
        Self { handle, sent }
    }

    /// Assigns a digits request per id; the inbox takes each.
    fn assign(&self, ids: &[&str]) {
        for id in ids {
            assert!(self.handle.assign(assignment(id)).is_ok(), "{id} assigned");
        }
    }

    /// Reports until `taken` says every assignment sent was taken from the inbox.
    async fn report_once_taken(&self, taken: impl Fn(&SchedulerReport) -> bool) -> SchedulerReport {
        let deadline = Instant::now() + WAIT;
        loop {
            let report = self.handle.report().await;
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

    /// The next message the scheduler sends, within [`WAIT`].
    async fn next_sent(&mut self) -> Outgoing {
        tokio::time::timeout(WAIT, self.sent.recv())
            .await
            .expect("answered")
            .unwrap()
    }

    /// The next message, decoded as a result.
    async fn next_result(&mut self) -> InferResult {
        decode(&self.next_sent().await.payload).unwrap()
    }

    /// Whether nothing has been sent (yet).
    fn sent_nothing(&mut self) -> bool {
        self.sent.try_recv().is_err()
    }
}

fn modelled_energy() -> EnergyMeter {
    EnergyMeter::model(1.0, 2.0, 1)
}

/// A store in a temporary folder, removed on drop.
struct TempStore {
    store: Store,
    _dir: tempfile::TempDir,
}

impl TempStore {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("slim-actor-test-")
            .tempdir()
            .unwrap();
        Self {
            store: Store::open(dir.path()).unwrap(),
            _dir: dir,
        }
    }

    /// The ids of the requests stored and not answered.
    fn unanswered_ids(&self) -> Vec<String> {
        self.store
            .unanswered()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.id)
            .collect()
    }
}

#[tokio::test]
async fn an_assignment_refused_before_its_queue_is_reported_refused_by_key() {
    let actor = Fixture::new(1, 16);
    let key = RequestKey::new("replies", "bad");
    actor.handle.rejected(ErrorCode::Overloaded, Some(&key));
    actor.handle.rejected(ErrorCode::Malformed, None);
    let report = actor.handle.report().await;
    assert_eq!(report.refused, [key.wire()]);
    assert!(
        actor.handle.report().await.refused.is_empty(),
        "reported once"
    );
}

#[tokio::test]
async fn refusals_are_counted_by_code_and_reported_to_telemetry_without_draining() {
    let actor = Fixture::new(1, 16);
    actor.handle.rejected(ErrorCode::BadShape, None);
    actor.handle.rejected(ErrorCode::BadShape, None);
    actor.handle.rejected(ErrorCode::Unauthenticated, None);

    let expected = HashMap::from([(ErrorCode::BadShape, 2), (ErrorCode::Unauthenticated, 1)]);
    assert_eq!(actor.handle.rejections().await, expected);
    assert_eq!(actor.handle.report().await.rejections, expected);
    assert_eq!(
        actor.handle.report().await.rejections,
        expected,
        "counts since start: a report does not reset them"
    );
}

#[tokio::test]
async fn requests_wait_in_their_queue_while_no_instance_may_load() {
    let mut actor = Fixture::new(0, 16);
    actor.assign(&["r0", "r1", "r2"]);
    let report = actor.report_once_taken(|r| r.outstanding == 3).await;
    assert_eq!(report.queues.len(), 1, "{:?}", report.queues);
    let queue = &report.queues[0];
    assert_eq!((queue.model.as_str(), queue.width), ("digits", WIDTH));
    assert_eq!(queue.depth, 3);
    assert_eq!(queue.instances, 0);
    assert_eq!(report.completed, 0);
    assert!(
        actor.sent_nothing(),
        "nothing is answered without an instance"
    );
}

#[tokio::test]
async fn a_duplicate_of_a_queued_request_is_ignored() {
    let mut actor = Fixture::new(0, 16);
    actor.assign(&["r0", "r0", "r1"]);
    let report = actor
        .report_once_taken(|r| r.outstanding as u64 + r.duplicates == 3)
        .await;
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.outstanding, 2);
    assert_eq!(report.queues[0].depth, 2);
    assert!(actor.sent_nothing(), "a duplicate gets no reply of its own");
}

#[tokio::test]
async fn beyond_max_queued_an_assignment_is_answered_overloaded() {
    let mut actor = Fixture::new(0, 2);
    actor.assign(&["r0", "r1", "r2"]);
    let report = actor
        .report_once_taken(|r| r.outstanding as u64 + r.overloaded == 3)
        .await;
    assert_eq!((report.outstanding, report.overloaded), (2, 1));
    // Reported as refused, not answered: the coordinator drops it from its ledger and routes
    // a retry again.
    assert_eq!(report.refused, [RequestKey::new("replies", "r2").wire()]);
    assert!(report.done.is_empty(), "{:?}", report.done);
    let reply = actor
        .sent
        .try_recv()
        .expect("the refused request is answered");
    assert_eq!(reply.topic, "replies");
    let error: ErrorReply = decode(&reply.payload).unwrap();
    assert_eq!(error.code, ErrorCode::Overloaded);
    assert_eq!(error.id.as_deref(), Some("r2"), "the one past the limit");
    assert_eq!(error.origin, "agent:test");
}

#[tokio::test]
async fn an_accepted_request_is_stored_until_it_is_answered() {
    let temp = TempStore::new();
    let waiting = Fixture::with_store(0, &temp.store);
    waiting.assign(&["r0"]);
    waiting.report_once_taken(|r| r.outstanding == 1).await;
    assert_eq!(
        temp.store.unanswered().unwrap(),
        vec![(RequestKey::new("replies", "r0"), b"assignment r0".to_vec())]
    );
    drop(waiting);

    let mut serving = Fixture::with_store(1, &temp.store);
    serving.assign(&["r1"]);
    let result = serving.next_result().await;
    assert_eq!(result.id, "r1");
    // The reply leaves before the store is updated; a report comes after both.
    serving.handle.report().await;
    assert_eq!(
        temp.unanswered_ids(),
        ["r0"],
        "r1 is forgotten once answered"
    );
}

#[tokio::test]
async fn a_stored_request_is_forgotten_on_command() {
    let temp = TempStore::new();
    let actor = Fixture::with_store(0, &temp.store);
    // Accepted by an earlier run and no longer servable (say its model is gone).
    let gone = RequestKey::new("replies", "gone");
    temp.store.accept(&gone, b"gone").unwrap();
    temp.store
        .accept(&RequestKey::new("replies", "keep"), b"keep")
        .unwrap();
    actor.handle.forget_stored(gone);
    // Commands are handled in order: once this answers, the forget is done.
    actor.handle.rejections().await;
    assert_eq!(temp.unanswered_ids(), ["keep"]);
}

#[tokio::test]
async fn an_answered_request_is_reported_done_once_with_its_batch() {
    let mut actor = Fixture::new(1, 16);
    actor.assign(&["r0"]);
    let answer = actor.next_sent().await;
    assert_eq!(answer.topic, "replies");
    let result: InferResult = decode(&answer.payload).unwrap();
    assert_eq!((result.id.as_str(), result.width), ("r0", WIDTH));
    assert_eq!(result.top_k.len(), 5);

    let wire = RequestKey::new("replies", "r0").wire();
    let first = actor.handle.report().await;
    assert_eq!((first.completed, first.outstanding), (1, 0));
    assert_eq!(first.done, std::slice::from_ref(&wire));
    assert_eq!(first.batches.len(), 1);
    assert_eq!(first.batches[0].requests, [wire]);
    assert_eq!(first.peak_instances, 1, "one instance was loaded for it");
    let second = actor.handle.report().await;
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
    let mut actor = Fixture::with_energy(meter);
    actor.handle.attribute_power(1000.0);
    actor.assign(&["r0"]);
    let result = actor.next_result().await;
    assert_eq!(result.energy_source, slim_protocol::EnergySource::Nvml);
    assert!(
        result.energy_j > 0.0,
        "1000 W for the batch's run, not the 0 W the meter started from: {}",
        result.energy_j
    );
}
