//! Requests at a steady pace, each with the first answer its client passed on, and every answer
//! seen on the reply topic: what the fault tests (`reliability`, `federation`) count lost,
//! duplicate and conflicting answers from.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use slim_client::{client::Reply, client::SlimClient, samples::Sample};
use slim_protocol::InferRequest;

/// How many requests a second, for how long, and how long after the last one to wait for
/// answers.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub rate: f64,
    pub duration: Duration,
    pub drain: Duration,
}

impl Pace {
    /// How many requests [`drive`] sends.
    pub fn count(&self) -> usize {
        (self.duration.as_secs_f64() * self.rate).round() as usize
    }
}

/// One request and its first answer, times from the start of the load.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    /// When it was due: request `i` at `i / rate`.
    pub sent_at: Duration,
    pub label: Option<u32>,
    pub answer: Option<(Duration, Reply)>,
}

impl Record {
    pub fn latency(&self) -> Option<Duration> {
        self.answer
            .as_ref()
            .map(|(at, _)| at.saturating_sub(self.sent_at))
    }

    pub fn is_result(&self) -> bool {
        matches!(self.answer, Some((_, Reply::Result(_))))
    }

    /// The agent that answered with a result.
    pub fn agent(&self) -> Option<&str> {
        match &self.answer {
            Some((_, Reply::Result(r))) => Some(&r.agent),
            _ => None,
        }
    }

    /// The code of the error it was answered with.
    pub fn error(&self) -> Option<&'static str> {
        match &self.answer {
            Some((_, Reply::Error(e))) => Some(e.code.as_str()),
            _ => None,
        }
    }
}

/// Sends `pace.count()` digits requests with ids `{tag}-{i}`, request `i` at `t0 + i / rate`,
/// each once (the client retries it until the load's end plus the drain when it was built
/// with retries); returns once every one is answered or that end has passed.
pub async fn drive(
    client: &SlimClient,
    samples: &[Sample],
    tag: &str,
    pace: Pace,
    t0: Instant,
) -> Vec<Record> {
    let until = t0 + pace.duration + pace.drain;
    let n = pace.count();
    let records: Arc<Mutex<Vec<Record>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let answered = Arc::new(AtomicUsize::new(0));
    for i in 0..n {
        let sent_at = Duration::from_secs_f64(i as f64 / pace.rate);
        tokio::time::sleep_until((t0 + sent_at).into()).await;
        let sample = &samples[(i * 7919) % samples.len()];
        let id = format!("{tag}-{i}");
        let mut request = InferRequest::new(id.clone(), "digits", sample.input.clone());
        request.sent_at_ms = Some(slim_protocol::now_ms());
        records.lock().unwrap().push(Record {
            id,
            sent_at,
            label: sample.label,
            answer: None,
        });
        let pending = client
            .send_until(request, Some(until))
            .await
            .expect("the client queues the request");
        let (records, answered) = (records.clone(), answered.clone());
        tokio::spawn(async move {
            if let Ok(Ok(reply)) = tokio::time::timeout_at(until.into(), pending).await {
                records.lock().unwrap()[i].answer = Some((t0.elapsed(), reply));
                answered.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    while answered.load(Ordering::SeqCst) < n && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let records = records.lock().unwrap().clone();
    records
}

/// The ids of the requests that got no answer.
pub fn lost(records: &[Record]) -> Vec<&str> {
    records
        .iter()
        .filter(|r| r.answer.is_none())
        .map(|r| r.id.as_str())
        .collect()
}

/// Every answer seen on a reply topic, duplicates included: id → kinds, in order.
pub type Answers = HashMap<String, Vec<String>>;

/// [`Answers`] as [`log_answers`] fills it.
pub type AnswerLog = Arc<Mutex<Answers>>;

/// Records every answer published on `client`'s reply topic (the client itself passes on only
/// the first per id), each as `kind` names it, until the task is aborted.
pub fn log_answers(
    client: &SlimClient,
    kind: fn(&Reply) -> String,
) -> (AnswerLog, tokio::task::JoinHandle<()>) {
    let log: AnswerLog = Default::default();
    let mut tap = client.tap(client.reply_topic());
    let task = {
        let log = log.clone();
        tokio::spawn(async move {
            while let Some((_, payload)) = tap.recv().await {
                if let Some((id, reply)) = Reply::decode(&payload) {
                    log.lock()
                        .unwrap()
                        .entry(id)
                        .or_default()
                        .push(kind(&reply));
                }
            }
        })
    };
    (log, task)
}

/// Answers beyond the first to request `id`.
pub fn extra_answers_to(answers: &Answers, id: &str) -> usize {
    answers.get(id).map_or(0, |k| k.len().saturating_sub(1))
}

/// Answers beyond the first, over all requests.
pub fn extra_answers(answers: &Answers) -> usize {
    answers.values().map(|k| k.len().saturating_sub(1)).sum()
}
