//! CPU and RAM from sysinfo.

use slim_protocol::DeviceInfo;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// Samples CPU utilization and memory.
#[derive(Debug)]
pub struct SystemSampler {
    system: System,
}

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SystemReading {
    /// CPU utilization over all cores, 0..1, since the previous sample.
    pub cpu_util: f32,
    /// RAM in use.
    pub ram_used_bytes: u64,
    /// RAM in total.
    pub ram_total_bytes: u64,
}

impl Default for SystemSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemSampler {
    /// A sampler; the first CPU reading covers the time since this call.
    pub fn new() -> Self {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        Self { system }
    }

    /// Reads the sensors.
    pub fn sample(&mut self) -> SystemReading {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        SystemReading {
            cpu_util: self.system.global_cpu_usage() / 100.0,
            ram_used_bytes: self.system.used_memory(),
            ram_total_bytes: self.system.total_memory(),
        }
    }
}

/// Describes this machine.
pub fn device_info() -> DeviceInfo {
    let mut system = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    system.refresh_memory();
    DeviceInfo {
        hostname: System::host_name().unwrap_or_default(),
        kind: "cpu".into(),
        cpu_model: system
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .unwrap_or_default(),
        cpu_cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        ram_bytes: system.total_memory(),
        gpu: None,
        vram_bytes: None,
    }
}
