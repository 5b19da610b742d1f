//! RAPL (Running Average Power Limit) energy counters of the CPU packages, in the powercap sysfs
//! class: `sys/class/powercap/intel-rapl:<N>/energy_uj` (Intel, and AMD Zen since Linux 5.8,
//! which uses the same driver and names).
//!
//! Every path is read under a root folder (`/` on a host, a fixture tree in tests).
//!
//! - **Domains**: the top-level zones `intel-rapl:<N>` whose `name` starts with `package`
//!   (`package-0`, `package-1` on a two-socket server), summed. Their sub-zones
//!   (`intel-rapl:<N>:<M>`: `core`, `uncore`, `dram`) are not read: `core` and `uncore` are
//!   inside the package figure, and `dram` is left out. `psys` (whole platform, some laptops) and
//!   `intel-rapl-mmio:<N>` (a second interface to the same package counter) are skipped so that
//!   nothing is counted twice.
//! - **Counter**: `energy_uj`, microjoules, wraps to 0 after `max_energy_range_uj` (about 262 kJ
//!   on current parts: some twenty minutes at 200 W). A reading below the previous one is a wrap
//!   and counts `max − previous + current`; reading once per telemetry interval (1 s) sees every
//!   wrap. Without `max_energy_range_uj`, only `current` is counted (a lower bound).
//! - **Power**: the counters' increase over the time since the previous reading. The first
//!   reading (right after the sensor is opened) has no power yet, only the counter.
//! - **Permissions**: since Linux 5.10 `energy_uj` is readable by root only (the PLATYPUS side
//!   channel, CVE-2020-8694). The sensor then fails to open and says how to grant read access.
//!
//! RAPL covers the CPU packages, not a discrete GPU nor the rest of the board, so it is the
//! energy source when batches run on the CPU, and NVML stays the source when they run on the GPU.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use slim_protocol::{DeviceInfo, EnergySource};

use super::sensor::{PowerSensor, SensorError, SensorReading};

/// The powercap class folder, under the root.
pub const POWERCAP: &str = "sys/class/powercap";

/// The shortest time between two readings over which power is computed; a shorter one gives
/// no power figure (RAPL counters update about every millisecond).
pub const MIN_POWER_INTERVAL: Duration = Duration::from_millis(20);

/// What to do when `energy_uj` is readable by root only.
pub const PERMISSION_HINT: &str = "energy_uj is readable by root only since Linux 5.10; \
     run the agent as root, or let its group read the counters at boot with a systemd-tmpfiles \
     line `z /sys/class/powercap/intel-rapl:*/energy_uj 0440 root slim - -` (see docs/deploy.md)";

/// One package domain.
#[derive(Debug, Clone, PartialEq)]
pub struct RaplDomain {
    /// Its `name` (`package-0`).
    pub name: String,
    /// The zone folder (`…/intel-rapl:0`).
    pub dir: PathBuf,
    /// Where its counter wraps, microjoules (`max_energy_range_uj`), when readable.
    pub max_energy_range_uj: Option<u64>,
}

impl RaplDomain {
    /// The counter file.
    pub fn energy_path(&self) -> PathBuf {
        self.dir.join("energy_uj")
    }

    /// Reads the counter, microjoules.
    pub fn read_uj(&self) -> Result<u64, SensorError> {
        read_counter(&self.energy_path())
    }
}

/// Reads a whole non-negative integer from a sysfs file; a permission error says how to fix it.
pub fn read_counter(path: &Path) -> Result<u64, SensorError> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, &e))?;
    let text = String::from_utf8_lossy(&bytes);
    let t = text.trim();
    t.parse::<u64>().map_err(|_| SensorError::Parse {
        path: path.to_path_buf(),
        expected: "a non-negative integer",
        found: t.chars().take(40).collect(),
    })
}

/// The error for a failed read of `path`.
pub fn io_error(path: &Path, e: &std::io::Error) -> SensorError {
    match e.kind() {
        std::io::ErrorKind::NotFound => SensorError::Missing {
            path: path.to_path_buf(),
        },
        std::io::ErrorKind::PermissionDenied => SensorError::Io {
            path: path.to_path_buf(),
            reason: format!("permission denied: {PERMISSION_HINT}"),
        },
        _ => SensorError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    }
}

/// The energy between two readings of a counter that wraps after `max_range_uj`.
pub fn counter_delta(previous: u64, current: u64, max_range_uj: Option<u64>) -> u64 {
    if current >= previous {
        current - previous
    } else {
        match max_range_uj {
            Some(max) if max >= previous => max - previous + current,
            _ => current,
        }
    }
}

/// The zone index `N` of a top-level zone named `intel-rapl:<N>` (not its sub-zones).
fn zone_index(name: &str) -> Option<u32> {
    name.strip_prefix("intel-rapl:")?.parse().ok()
}

/// The package domains under `root`, by zone index (empty when there are none).
pub fn discover_packages(root: &Path) -> Vec<RaplDomain> {
    let mut zones: Vec<(u32, PathBuf)> = std::fs::read_dir(root.join(POWERCAP))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((zone_index(&e.file_name().to_string_lossy())?, e.path())))
        .filter(|(_, p)| p.is_dir())
        .collect();
    zones.sort();
    zones
        .into_iter()
        .filter_map(|(_, dir)| {
            let name = std::fs::read_to_string(dir.join("name")).ok()?;
            let name = name.trim();
            name.starts_with("package").then(|| RaplDomain {
                name: name.to_string(),
                max_energy_range_uj: read_counter(&dir.join("max_energy_range_uj")).ok(),
                dir,
            })
        })
        .collect()
}

/// The RAPL sensor: the package domains' energy counters, summed and unwrapped.
#[derive(Debug, Clone)]
pub struct RaplSensor {
    domains: Vec<RaplDomain>,
    /// Each domain's raw counter at the latest reading.
    raw_uj: Vec<u64>,
    /// Energy since the sensor was opened, microjoules, wraps undone.
    total_uj: u64,
    /// When the latest reading (or the opening) was taken.
    last_at: Instant,
    /// Wraps seen.
    wraps: u64,
    warnings: Vec<String>,
}

impl RaplSensor {
    /// Opens the package domains under `root` and reads their counters once (the zero of the
    /// energy counter). Fails when there are none, or when a counter cannot be read (the error
    /// says how to grant access when it is a permission problem).
    pub fn open(root: &Path) -> Result<Self, SensorError> {
        Self::open_at(root, Instant::now())
    }

    /// [`Self::open`] at a given instant.
    pub fn open_at(root: &Path, now: Instant) -> Result<Self, SensorError> {
        let class = root.join(POWERCAP);
        if !class.is_dir() {
            return Err(SensorError::NotPresent(format!(
                "no {}: no RAPL on this host (not x86, or the intel_rapl driver is not loaded)",
                class.display()
            )));
        }
        let domains = discover_packages(root);
        if domains.is_empty() {
            return Err(SensorError::NotPresent(format!(
                "no package domain (intel-rapl:<N> named package-<N>) under {}",
                class.display()
            )));
        }
        let raw_uj = domains
            .iter()
            .map(RaplDomain::read_uj)
            .collect::<Result<Vec<_>, _>>()?;
        let warnings = domains
            .iter()
            .filter(|d| d.max_energy_range_uj.is_none())
            .map(|d| {
                format!(
                    "{}: no readable max_energy_range_uj; a counter wrap is counted from 0",
                    d.name
                )
            })
            .collect();
        Ok(Self {
            domains,
            raw_uj,
            total_uj: 0,
            last_at: now,
            wraps: 0,
            warnings,
        })
    }

    /// The package domains summed.
    pub fn domains(&self) -> &[RaplDomain] {
        &self.domains
    }

    /// Counter wraps seen since the sensor was opened.
    pub fn wraps(&self) -> u64 {
        self.wraps
    }

    /// What was missing when the sensor was opened.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Energy since the sensor was opened, microjoules.
    pub fn total_uj(&self) -> u64 {
        self.total_uj
    }

    /// One line on what was found.
    pub fn summary(&self) -> String {
        let names: Vec<&str> = self.domains.iter().map(|d| d.name.as_str()).collect();
        format!("RAPL energy counters of {}", names.join(" + "))
    }

    /// Reads every counter at `now`. Fails, changing nothing, when one cannot be read: the next
    /// reading that succeeds then covers the whole time since the last good one.
    pub fn read_at(&mut self, now: Instant) -> Result<SensorReading, SensorError> {
        let raw = self
            .domains
            .iter()
            .map(RaplDomain::read_uj)
            .collect::<Result<Vec<_>, _>>()?;
        let mut window_uj = 0;
        for ((domain, previous), current) in self.domains.iter().zip(&self.raw_uj).zip(&raw) {
            if current < previous {
                self.wraps += 1;
            }
            window_uj += counter_delta(*previous, *current, domain.max_energy_range_uj);
        }
        let elapsed = now.saturating_duration_since(self.last_at);
        self.raw_uj = raw;
        self.total_uj += window_uj;
        self.last_at = now;
        let power_w = (elapsed >= MIN_POWER_INTERVAL)
            .then(|| (window_uj as f64 / 1e6 / elapsed.as_secs_f64()) as f32);
        Ok(SensorReading {
            power_w,
            energy_counter_mj: Some(self.total_uj / 1000),
            ..SensorReading::default()
        })
    }
}

impl PowerSensor for RaplSensor {
    fn name(&self) -> &'static str {
        "rapl"
    }

    fn source(&self) -> EnergySource {
        EnergySource::Rapl
    }

    fn covers_cpu(&self) -> bool {
        true
    }

    /// RAPL knows nothing of a GPU.
    fn describe(&self, _device: &mut DeviceInfo) {}

    fn read(&mut self) -> Result<SensorReading, SensorError> {
        self.read_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_that_wraps_counts_up_to_the_range_and_on_from_zero() {
        assert_eq!(counter_delta(100, 250, Some(1000)), 150);
        assert_eq!(counter_delta(900, 50, Some(1000)), 150);
        assert_eq!(
            counter_delta(900, 50, None),
            50,
            "unknown range: a lower bound"
        );
        assert_eq!(
            counter_delta(900, 50, Some(10)),
            50,
            "a range below the reading"
        );
    }

    #[test]
    fn only_top_level_zones_are_zones() {
        assert_eq!(zone_index("intel-rapl:0"), Some(0));
        assert_eq!(zone_index("intel-rapl:12"), Some(12));
        assert_eq!(zone_index("intel-rapl:0:1"), None);
        assert_eq!(zone_index("intel-rapl-mmio:0"), None);
        assert_eq!(zone_index("intel-rapl"), None);
    }

    #[test]
    fn permission_denied_says_how_to_grant_access() {
        let path = Path::new("/sys/class/powercap/intel-rapl:0/energy_uj");
        let e = io_error(path, &std::io::ErrorKind::PermissionDenied.into());
        let text = e.to_string();
        assert!(text.contains("energy_uj"), "{text}");
        assert!(text.contains("root only since Linux 5.10"), "{text}");
        assert!(text.contains("tmpfiles"), "{text}");
        assert!(matches!(
            io_error(path, &std::io::ErrorKind::NotFound.into()),
            SensorError::Missing { .. }
        ));
    }
}
