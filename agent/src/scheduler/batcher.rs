//! The local greedy batcher: pure queue logic, no I/O and no clock of its own.
//!
//! One FIFO queue per (model, width). A queue is *due* when it holds a full batch (the batch size
//! its oldest request was assigned) or when its oldest request has waited its maximum queue
//! delay. Among due queues with a free model instance, the one whose oldest request has waited
//! longest goes first. With the default delay of 0 the batcher is work-conserving: an idle
//! instance takes what is queued at once, and batches grow only while every instance is busy.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

/// Identifies a queue: model family and width in thousandths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueKey {
    /// Model family.
    pub model: String,
    /// Width × 1000.
    pub width_milli: u16,
}

impl QueueKey {
    /// Key for `model` at `width`.
    pub fn new(model: &str, width: f32) -> Self {
        Self {
            model: model.to_string(),
            width_milli: slim_protocol::WidthKey::of(width).0,
        }
    }

    /// The width as a float.
    pub fn width(&self) -> f32 {
        self.width_milli as f32 / 1000.0
    }
}

/// A queued item with the batching limits it was assigned.
#[derive(Debug, Clone)]
pub struct Queued<T> {
    /// The payload (a validated request).
    pub item: T,
    /// When it entered the queue.
    pub enqueued_at: Instant,
    /// Largest batch it may join.
    pub max_batch: usize,
    /// Longest it may wait for the batch to fill.
    pub max_delay: Duration,
}

/// A batch ready to run.
#[derive(Debug)]
pub struct Batch<T> {
    /// Which queue it came from.
    pub key: QueueKey,
    /// The items, oldest first.
    pub items: Vec<Queued<T>>,
}

/// Snapshot of one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSnapshot {
    /// Queue key.
    pub key: QueueKey,
    /// Items waiting.
    pub depth: usize,
    /// Wait of the oldest item.
    pub oldest_wait: Duration,
}

/// The per-(model, width) queues.
#[derive(Debug)]
pub struct Batcher<T> {
    queues: BTreeMap<QueueKey, VecDeque<Queued<T>>>,
}

impl<T> Default for Batcher<T> {
    fn default() -> Self {
        Self {
            queues: BTreeMap::new(),
        }
    }
}

impl<T> Batcher<T> {
    /// Adds an item to its queue.
    pub fn push(&mut self, key: QueueKey, queued: Queued<T>) {
        self.queues.entry(key).or_default().push_back(queued);
    }

    /// Total items waiting.
    pub fn len(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the next batch, if a due queue has a free instance (`has_free_instance`).
    pub fn next_batch(
        &mut self,
        now: Instant,
        has_free_instance: impl Fn(&QueueKey) -> bool,
    ) -> Option<Batch<T>> {
        let key = self
            .queues
            .iter()
            .filter(|(key, queue)| is_due(queue, now) && has_free_instance(key))
            .min_by_key(|(_, queue)| queue.front().map(|q| q.enqueued_at))
            .map(|(key, _)| key.clone())?;
        let queue = self.queues.get_mut(&key)?;
        let size = queue.front().map(|q| q.max_batch.max(1))?.min(queue.len());
        let items: Vec<_> = queue.drain(..size).collect();
        if queue.is_empty() {
            self.queues.remove(&key);
        }
        Some(Batch { key, items })
    }

    /// The earliest moment a queue that is not yet due becomes due by its delay.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter_map(|q| q.front().map(|head| head.enqueued_at + head.max_delay))
            .min()
    }

    /// Depth and oldest wait of every non-empty queue.
    pub fn snapshot(&self, now: Instant) -> Vec<QueueSnapshot> {
        self.queues
            .iter()
            .map(|(key, queue)| QueueSnapshot {
                key: key.clone(),
                depth: queue.len(),
                oldest_wait: queue
                    .front()
                    .map(|q| now.saturating_duration_since(q.enqueued_at))
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Removes and returns the items of one queue.
    pub fn drain_queue(&mut self, key: &QueueKey) -> Vec<Queued<T>> {
        self.queues.remove(key).map(Vec::from).unwrap_or_default()
    }

    /// The item at the head of a queue.
    pub fn head(&self, key: &QueueKey) -> Option<&T> {
        self.queues
            .get(key)
            .and_then(|q| q.front())
            .map(|q| &q.item)
    }

    /// Removes and returns every queued item, e.g. to persist them at shutdown.
    pub fn drain_all(&mut self) -> Vec<(QueueKey, Queued<T>)> {
        std::mem::take(&mut self.queues)
            .into_iter()
            .flat_map(|(key, queue)| queue.into_iter().map(move |q| (key.clone(), q)))
            .collect()
    }
}

fn is_due<T>(queue: &VecDeque<Queued<T>>, now: Instant) -> bool {
    match queue.front() {
        Some(head) => {
            queue.len() >= head.max_batch.max(1)
                || now.saturating_duration_since(head.enqueued_at) >= head.max_delay
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(id: u32, at: Instant, max_batch: usize, delay_ms: u64) -> Queued<u32> {
        Queued {
            item: id,
            enqueued_at: at,
            max_batch,
            max_delay: Duration::from_millis(delay_ms),
        }
    }

    fn ids(batch: &Batch<u32>) -> Vec<u32> {
        batch.items.iter().map(|q| q.item).collect()
    }

    #[test]
    fn a_full_batch_is_released_at_once() {
        let t0 = Instant::now();
        let mut b = Batcher::default();
        let k = QueueKey::new("m", 0.5);
        for i in 0..5 {
            b.push(k.clone(), queued(i, t0, 4, 1000));
        }
        let batch = b.next_batch(t0, |_| true).expect("full batch is due");
        assert_eq!(ids(&batch), vec![0, 1, 2, 3]);
        assert!(
            b.next_batch(t0, |_| true).is_none(),
            "one left, not yet due"
        );
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn a_partial_batch_waits_for_its_queue_delay_and_no_longer() {
        let t0 = Instant::now();
        let mut b = Batcher::default();
        let k = QueueKey::new("m", 0.25);
        b.push(k.clone(), queued(1, t0, 8, 10));
        b.push(k.clone(), queued(2, t0 + Duration::from_millis(3), 8, 10));
        assert!(b
            .next_batch(t0 + Duration::from_millis(9), |_| true)
            .is_none());
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(10)));
        let batch = b
            .next_batch(t0 + Duration::from_millis(10), |_| true)
            .unwrap();
        assert_eq!(ids(&batch), vec![1, 2]);
        assert!(b.is_empty());
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn the_queue_that_waited_longest_goes_first() {
        let t0 = Instant::now();
        let mut b = Batcher::default();
        let narrow = QueueKey::new("m", 0.25);
        let wide = QueueKey::new("m", 1.0);
        b.push(wide.clone(), queued(1, t0, 1, 0));
        b.push(
            narrow.clone(),
            queued(2, t0 + Duration::from_millis(1), 1, 0),
        );
        let now = t0 + Duration::from_millis(5);
        assert_eq!(b.next_batch(now, |_| true).unwrap().key, wide);
        assert_eq!(b.next_batch(now, |_| true).unwrap().key, narrow);
    }

    #[test]
    fn a_queue_without_a_free_instance_is_skipped() {
        let t0 = Instant::now();
        let mut b = Batcher::default();
        let busy = QueueKey::new("m", 1.0);
        let free = QueueKey::new("m", 0.5);
        b.push(busy.clone(), queued(1, t0, 1, 0));
        b.push(free.clone(), queued(2, t0 + Duration::from_millis(1), 1, 0));
        let batch = b
            .next_batch(t0 + Duration::from_millis(2), |k| *k != busy)
            .unwrap();
        assert_eq!(batch.key, free);
        assert!(b
            .next_batch(t0 + Duration::from_millis(2), |k| *k != busy)
            .is_none());
    }

    /// The agents' default: no delay. A lone request runs at once on an idle instance, and a
    /// batch forms only from what queued while every instance was busy.
    #[test]
    fn without_a_delay_idle_instances_take_work_at_once_and_batches_form_while_busy() {
        let t0 = Instant::now();
        let mut b = Batcher::default();
        let k = QueueKey::new("m", 0.5);
        b.push(k.clone(), queued(1, t0, 8, 0));
        assert_eq!(ids(&b.next_batch(t0, |_| true).unwrap()), vec![1]);
        let busy = |_: &QueueKey| false;
        for i in 2..12 {
            b.push(k.clone(), queued(i, t0, 8, 0));
            assert!(b.next_batch(t0, busy).is_none(), "every instance is busy");
        }
        let batch = b.next_batch(t0, |_| true).unwrap();
        assert_eq!(ids(&batch), (2..10).collect::<Vec<_>>(), "up to max_batch");
        assert_eq!(ids(&b.next_batch(t0, |_| true).unwrap()), vec![10, 11]);
    }

    #[test]
    fn snapshots_report_depth_and_oldest_wait() {
        let t0 = Instant::now();
        let mut b = Batcher::default();
        let k = QueueKey::new("m", 0.75);
        b.push(k.clone(), queued(1, t0, 8, 100));
        b.push(k.clone(), queued(2, t0 + Duration::from_millis(5), 8, 100));
        let snap = b.snapshot(t0 + Duration::from_millis(20));
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].depth, 2);
        assert_eq!(snap[0].oldest_wait, Duration::from_millis(20));
        assert_eq!(k.width(), 0.75);
    }
}
