//! Measuring what a model instance costs in memory when it loads: the growth of the process's
//! resident set while it is created and runs one batch of the largest size.
//!
//! Only the first load of a (model file, batch size) in a process is measured: later loads reuse
//! pages the allocator already holds and would look free. Every later instance of that plan is
//! charged the first measurement.

use std::{collections::HashMap, path::PathBuf, sync::Mutex};

use crate::model::{Instance, ModelFamily, WidthPlan};

/// Loads are measured one at a time, so two loads do not see each other's growth.
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// First measurement per (ONNX path, batch size), bytes.
static MEASURED: Mutex<Option<HashMap<(PathBuf, usize), u64>>> = Mutex::new(None);

/// Resident memory of this process, bytes (sysinfo; on Linux `/proc/self/statm`), if readable.
/// Called twice per model load, not per telemetry tick; it refreshes this process's memory only
/// (no other process, no per-thread tasks).
pub fn resident_bytes() -> Option<u64> {
    use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};
    let pid = sysinfo::get_current_pid().ok()?;
    let mut system = System::new();
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing().with_memory().without_tasks(),
    );
    system.process(pid).map(sysinfo::Process::memory)
}

/// Creates an instance of `plan`, runs one batch of `batch` samples to allocate its
/// activations, and returns it with its measured size (at least one page).
pub fn load_measured(
    family: &ModelFamily,
    plan: &WidthPlan,
    batch: usize,
) -> Result<(Instance, u64), String> {
    let _guard = LOAD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let key = (family.dir.join(&plan.entry.file), batch.max(1));
    let known = MEASURED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&key)
        .copied();
    let before = resident_bytes().unwrap_or(0);
    let mut state = plan.spawn_instance().map_err(|e| e.to_string())?;
    // Every plan of the instance runs once, so all its activations are allocated.
    for size in plan.concrete_batches().into_iter().chain([batch.max(1)]) {
        let samples = vec![vec![0.0f32; family.sample_len()]; size];
        family
            .run_batch(&mut state, &samples)
            .map_err(|e| e.to_string())?;
    }
    let bytes = match known {
        Some(bytes) => bytes,
        None => {
            let after = resident_bytes().unwrap_or(before);
            let bytes = after.saturating_sub(before).max(4096);
            MEASURED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(HashMap::new)
                .insert(key, bytes);
            bytes
        }
    };
    Ok((state, bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_a_resident_set() {
        let bytes = super::resident_bytes().expect("sysinfo reads this process's memory");
        assert!(bytes > 1 << 20, "{bytes} bytes resident");
    }
}
