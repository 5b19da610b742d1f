//! When to add and remove model instances: pure rules over queue waits, memory and utilization.
//!
//! An instance is one execution state of a (model, width) plan: the weights are shared, each
//! instance holds its own activations. Instances are added while a queue keeps waiting, as long
//! as the memory budget and the utilization ceiling allow, and dropped when idle. Fairness
//! across models: each (model, width) queue is always allowed its first instance (memory
//! permitting), so one model's batches never keep another's queue from running at all; the
//! ceiling only caps extra instances.

use std::time::Duration;

/// Limits on instances.
#[derive(Debug, Clone, PartialEq)]
pub struct InstancePolicy {
    /// Most instances of one (model, width).
    pub max_per_queue: usize,
    /// Add an instance when a queue's oldest request has waited this long with every instance busy.
    pub scale_up_wait: Duration,
    /// Drop an instance that has been idle this long.
    pub idle_timeout: Duration,
    /// Memory all instances together may take, bytes (RAM on CPUs and Jetsons, VRAM on GPUs).
    pub memory_budget_bytes: u64,
    /// Most batches running at once, as a fraction of the device's parallel capacity (cores).
    pub utilization_ceiling: f32,
    /// Parallel capacity of the device: cores for the CPU backend.
    pub capacity: usize,
}

/// What the scheduler knows when it considers adding an instance to a queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleInput {
    /// Instances of this queue already loaded.
    pub loaded: usize,
    /// How long the queue's oldest request has waited.
    pub oldest_wait: Duration,
    /// Memory all loaded instances take, bytes.
    pub memory_used: u64,
    /// Measured memory of one instance of this queue, if one was ever loaded.
    pub instance_bytes: Option<u64>,
    /// Batches running now, on any queue.
    pub running_batches: usize,
}

/// Why an instance may or may not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleDecision {
    /// Load one more instance.
    Add,
    /// Wait: the queue has not waited long enough.
    NotYet,
    /// At the per-queue maximum.
    AtMaximum,
    /// It would exceed the memory budget.
    NoMemory,
    /// The device is at its utilization ceiling.
    Saturated,
}

impl InstancePolicy {
    /// Decides whether a queue with no free instance gets another one.
    pub fn decide(&self, input: ScaleInput) -> ScaleDecision {
        if input.loaded >= self.max_per_queue {
            return ScaleDecision::AtMaximum;
        }
        let needed = input.instance_bytes.unwrap_or(0);
        if input.memory_used.saturating_add(needed) > self.memory_budget_bytes {
            return ScaleDecision::NoMemory;
        }
        // Every queue may always have one instance: otherwise a queue of small requests would
        // wait behind other models' long batches for its first instance (head-of-line
        // blocking across models). The ceiling limits only the extra parallelism.
        let ceiling = (self.capacity as f32 * self.utilization_ceiling).max(1.0);
        if input.loaded > 0 && input.running_batches as f32 >= ceiling {
            return ScaleDecision::Saturated;
        }
        if input.loaded > 0 && input.oldest_wait < self.scale_up_wait {
            return ScaleDecision::NotYet;
        }
        ScaleDecision::Add
    }

    /// Most instances one queue can reach, and so most batches of one (model, width) running
    /// at once: the per-queue maximum, and no more than the utilization ceiling lets extra
    /// instances be added up to (the first is always allowed). The memory budget may keep a
    /// queue below it.
    pub fn most_per_queue(&self) -> usize {
        let ceiling = (self.capacity as f32 * self.utilization_ceiling).max(1.0);
        self.max_per_queue.min(ceiling.ceil() as usize).max(1)
    }

    /// True when an instance idle for `idle` should be dropped.
    pub fn should_drop(&self, idle: Duration) -> bool {
        idle >= self.idle_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(budget: u64) -> InstancePolicy {
        InstancePolicy {
            max_per_queue: 4,
            scale_up_wait: Duration::from_millis(20),
            idle_timeout: Duration::from_secs(30),
            memory_budget_bytes: budget,
            utilization_ceiling: 1.0,
            capacity: 2,
        }
    }

    fn input(loaded: usize, wait_ms: u64, used: u64) -> ScaleInput {
        ScaleInput {
            loaded,
            oldest_wait: Duration::from_millis(wait_ms),
            memory_used: used,
            instance_bytes: Some(100),
            running_batches: loaded,
        }
    }

    #[test]
    fn the_first_instance_is_loaded_at_once_when_it_fits() {
        assert_eq!(policy(1000).decide(input(0, 0, 0)), ScaleDecision::Add);
    }

    #[test]
    fn another_instance_waits_for_the_queue_to_wait() {
        assert_eq!(policy(1000).decide(input(1, 5, 100)), ScaleDecision::NotYet);
        assert_eq!(policy(1000).decide(input(1, 25, 100)), ScaleDecision::Add);
    }

    /// What an agent announces as its concurrency is what `decide` lets one busy queue reach.
    #[test]
    fn most_per_queue_is_what_decide_lets_one_busy_queue_reach() {
        for (max_per_queue, capacity, ceiling) in [
            (4, 2, 1.0),
            (2, 16, 1.0),
            (4, 4, 0.5),
            (8, 4, 0.6),
            (3, 1, 0.1),
        ] {
            let p = InstancePolicy {
                max_per_queue,
                capacity,
                utilization_ceiling: ceiling,
                ..policy(u64::MAX)
            };
            let mut loaded = 0;
            // one queue, every instance busy, waiting long enough
            while p.decide(ScaleInput {
                loaded,
                oldest_wait: Duration::from_secs(1),
                memory_used: 0,
                instance_bytes: Some(1),
                running_batches: loaded,
            }) == ScaleDecision::Add
            {
                loaded += 1;
            }
            assert_eq!(
                p.most_per_queue(),
                loaded,
                "max {max_per_queue}, capacity {capacity}, ceiling {ceiling}"
            );
        }
    }

    #[test]
    fn instances_never_exceed_the_memory_budget() {
        let p = policy(250);
        assert_eq!(p.decide(input(1, 50, 200)), ScaleDecision::NoMemory);
        assert_eq!(p.decide(input(1, 50, 150)), ScaleDecision::Add);
        assert_eq!(
            p.decide(input(0, 50, 200)),
            ScaleDecision::NoMemory,
            "even a first one"
        );
    }

    #[test]
    fn a_saturated_device_gets_no_more_instances() {
        let mut i = input(1, 50, 100);
        i.running_batches = 2;
        assert_eq!(policy(1000).decide(i), ScaleDecision::Saturated);
    }

    #[test]
    fn a_queue_without_an_instance_gets_one_even_on_a_saturated_device() {
        let mut i = input(0, 0, 100);
        i.running_batches = 2;
        assert_eq!(policy(1000).decide(i), ScaleDecision::Add);
    }

    #[test]
    fn the_per_queue_maximum_holds() {
        assert_eq!(
            policy(10_000).decide(input(4, 500, 400)),
            ScaleDecision::AtMaximum
        );
    }

    #[test]
    fn idle_instances_are_dropped_after_the_timeout() {
        let p = policy(1000);
        assert!(!p.should_drop(Duration::from_secs(29)));
        assert!(p.should_drop(Duration::from_secs(30)));
    }
}
