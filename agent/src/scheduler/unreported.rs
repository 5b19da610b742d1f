//! Answered and refused keys and batch records waiting for telemetry, handed out in pages that
//! fit the protocol's limits on one report. Bounded: beyond [`MAX_UNREPORTED`] of any of them
//! the oldest are dropped, and counted.

use slim_protocol::{
    limits::{MAX_LIST_LEN, MAX_REPORT_KEY_BYTES},
    BatchRecord,
};

/// Answered keys, and batch records, waiting for a telemetry report; beyond this many of either
/// the oldest are dropped and counted (the coordinator's ledger reconciles with the agent's
/// outstanding count instead).
pub const MAX_UNREPORTED: usize = 100_000;

/// One report's share of the backlog.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Page {
    /// Batch records, oldest first.
    pub batches: Vec<BatchRecord>,
    /// Keys of answered requests, oldest first.
    pub done: Vec<String>,
    /// Keys of refused assignments, oldest first.
    pub refused: Vec<String>,
    /// Something is left for another page.
    pub more: bool,
}

/// The backlog.
#[derive(Debug, Default)]
pub struct Unreported {
    done: Vec<String>,
    refused: Vec<String>,
    batches: Vec<BatchRecord>,
    dropped: u64,
}

impl Unreported {
    /// Queues the key of an answered request.
    pub fn done(&mut self, key: String) {
        self.dropped += make_room(&mut self.done);
        self.done.push(key);
    }

    /// Queues the key of a refused assignment.
    pub fn refused(&mut self, key: String) {
        self.dropped += make_room(&mut self.refused);
        self.refused.push(key);
    }

    /// Queues the record of a batch. A record whose keys could never fit one page keeps its
    /// figures and loses its keys.
    pub fn batch(&mut self, mut record: BatchRecord) {
        if record.requests.len() > MAX_LIST_LEN || key_bytes(&record) > MAX_REPORT_KEY_BYTES {
            record.requests.clear();
        }
        self.dropped += make_room(&mut self.batches);
        self.batches.push(record);
    }

    /// Keys and records dropped unreported since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Takes the oldest keys and records that fit one report: at most [`MAX_REPORT_KEY_BYTES`]
    /// of key text and [`MAX_LIST_LEN`] entries per list. Answered keys go first: the
    /// coordinator's ledger and its memory of who answered what depend on them, while batch
    /// records only feed statistics. First drops what is beyond [`MAX_UNREPORTED`].
    pub fn page(&mut self) -> Page {
        self.dropped += trim(&mut self.done, MAX_UNREPORTED);
        self.dropped += trim(&mut self.refused, MAX_UNREPORTED);
        self.dropped += trim(&mut self.batches, MAX_UNREPORTED);
        let mut budget = MAX_REPORT_KEY_BYTES;
        let mut fit = |keys: usize| {
            let ok = keys <= budget;
            if ok {
                budget -= keys;
            }
            ok
        };
        let done = take_while_fits(&mut self.done, MAX_LIST_LEN, |k| fit(k.len()));
        let refused = take_while_fits(&mut self.refused, MAX_LIST_LEN, |k| fit(k.len()));
        let batches = take_while_fits(&mut self.batches, MAX_LIST_LEN, |b| fit(key_bytes(b)));
        Page {
            more: !self.done.is_empty() || !self.refused.is_empty() || !self.batches.is_empty(),
            batches,
            done,
            refused,
        }
    }
}

fn key_bytes(b: &BatchRecord) -> usize {
    b.requests.iter().map(String::len).sum()
}

/// Between reports a list may grow to twice [`MAX_UNREPORTED`]; then it drops back to the bound
/// at once, so trimming costs O(1) amortized per push. How many were dropped.
fn make_room<T>(items: &mut Vec<T>) -> u64 {
    if items.len() >= 2 * MAX_UNREPORTED {
        return trim(items, MAX_UNREPORTED);
    }
    0
}

/// Drops the oldest of `items` beyond `max`; how many.
fn trim<T>(items: &mut Vec<T>, max: usize) -> u64 {
    let n = items.len().saturating_sub(max);
    items.drain(..n);
    n as u64
}

/// Removes and returns the longest prefix of `items`, at most `max` long, whose elements all
/// `fit`.
fn take_while_fits<T>(items: &mut Vec<T>, max: usize, mut fit: impl FnMut(&T) -> bool) -> Vec<T> {
    let n = items.iter().take(max).take_while(|item| fit(item)).count();
    items.drain(..n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(keys: usize, key_len: usize) -> BatchRecord {
        BatchRecord {
            model: "digits".into(),
            width: 0.25,
            batch_size: keys as u16,
            queue_ms: 1.0,
            compute_ms: 1.0,
            energy_j: 0.01,
            requests: (0..keys).map(|_| "k".repeat(key_len)).collect(),
        }
    }

    #[test]
    fn a_prefix_is_taken_while_it_fits_and_the_rest_stays() {
        let mut items = vec![3, 4, 5, 1];
        let mut budget = 8;
        let taken = take_while_fits(&mut items, 10, |&n| {
            let ok = n <= budget;
            if ok {
                budget -= n;
            }
            ok
        });
        assert_eq!(taken, vec![3, 4]);
        assert_eq!(items, vec![5, 1], "order kept for the next page");
        assert_eq!(take_while_fits(&mut items, 1, |_| true), vec![5]);
    }

    /// Sustained load once answered more requests per second than one page could report, and
    /// the batch records went first: done keys were never reported and piled up to the bound.
    #[test]
    fn a_backlog_larger_than_a_page_is_paged_out_whole_with_answered_keys_first() {
        let mut u = Unreported::default();
        // 70-byte keys, as `slim bench` sends them: 5 000 answered in batches of 8.
        for b in 0..625 {
            let rec = record(8, 70);
            for k in 0..8 {
                u.done(format!("{:0>70}", b * 8 + k));
            }
            u.batch(rec);
        }
        let first = u.page();
        assert!(first.more);
        assert!(
            first.done.len() > 1000,
            "answered keys first: {}",
            first.done.len()
        );
        assert_eq!(first.done[0], format!("{:0>70}", 0));
        let (mut done, mut batches, mut pages) = (first.done.len(), first.batches.len(), 1);
        loop {
            let page = u.page();
            pages += 1;
            let keys: usize = page.done.iter().map(String::len).sum::<usize>()
                + page.batches.iter().map(key_bytes).sum::<usize>();
            assert!(keys <= MAX_REPORT_KEY_BYTES);
            done += page.done.len();
            batches += page.batches.len();
            if !page.more {
                break;
            }
        }
        assert_eq!((done, batches, u.dropped()), (5000, 625, 0));
        assert_eq!(pages, 6, "700 000 bytes of keys in pages of 128 KiB");
        assert_eq!(u.page(), Page::default(), "nothing left, nothing more");
    }

    #[test]
    fn refused_keys_follow_the_answered_ones_under_the_same_budget() {
        let mut u = Unreported::default();
        for i in 0..3000 {
            u.done(format!("{i:0>70}"));
            u.refused(format!("r{i:0>69}"));
        }
        let (mut done, mut refused) = (0, 0);
        loop {
            let page = u.page();
            let keys: usize = page.done.iter().chain(&page.refused).map(String::len).sum();
            assert!(keys <= MAX_REPORT_KEY_BYTES);
            if refused == 0 && !page.refused.is_empty() {
                assert_eq!(done + page.done.len(), 3000, "answered keys go first");
            }
            done += page.done.len();
            refused += page.refused.len();
            if !page.more {
                break;
            }
        }
        assert_eq!((done, refused), (3000, 3000));
    }

    #[test]
    fn a_page_lists_at_most_the_protocols_list_length() {
        let mut u = Unreported::default();
        for i in 0..MAX_LIST_LEN + 10 {
            u.done(i.to_string());
            u.batch(record(0, 0));
        }
        let page = u.page();
        assert_eq!(page.done.len(), MAX_LIST_LEN);
        assert_eq!(page.batches.len(), MAX_LIST_LEN);
        assert!(page.more);
        let rest = u.page();
        assert_eq!((rest.done.len(), rest.batches.len()), (10, 10));
        assert!(!rest.more);
    }

    #[test]
    fn a_record_too_large_for_any_page_keeps_its_figures_and_loses_its_keys() {
        let mut u = Unreported::default();
        u.batch(record(MAX_LIST_LEN + 1, 1));
        u.batch(record(2, MAX_REPORT_KEY_BYTES));
        let page = u.page();
        assert_eq!(page.batches.len(), 2);
        assert!(page.batches.iter().all(|b| b.requests.is_empty()));
        assert_eq!(page.batches[0].batch_size as usize, MAX_LIST_LEN + 1);
    }

    #[test]
    fn beyond_the_bound_the_oldest_are_dropped_and_counted() {
        let mut u = Unreported::default();
        for i in 0..MAX_UNREPORTED + 5 {
            u.done(i.to_string());
        }
        let page = u.page();
        assert_eq!(u.dropped(), 5);
        assert_eq!(page.done[0], "5", "the oldest went");
        // Pushing never holds more than twice the bound between reports.
        for i in 0..3 * MAX_UNREPORTED {
            u.batch(record(0, 0));
            assert!(u.batches.len() <= 2 * MAX_UNREPORTED, "at {i}");
        }
        assert!(u.dropped() >= MAX_UNREPORTED as u64);
    }
}
