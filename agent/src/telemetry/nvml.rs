//! NVIDIA GPUs through NVML: utilization, VRAM, power and the total-energy counter.
//!
//! The access sits behind [`NvmlSource`] so that recorded readings can be tested without a GPU;
//! [`NvmlLibrary`] (cargo feature `nvml`) is the real one, through nvml-wrapper, which loads
//! `libnvidia-ml` at run time.

use slim_protocol::{DeviceInfo, EnergySource};

use super::sensor::{PowerSensor, SensorError, SensorReading};

/// The NVML queries the agent needs, for one GPU.
pub trait NvmlSource: Send {
    /// Product name, e.g. `NVIDIA H200`.
    fn name(&self) -> Result<String, SensorError>;
    /// GPU utilization over NVML's last sample period, percent.
    fn utilization(&self) -> Result<u32, SensorError>;
    /// VRAM (used, total), bytes.
    fn memory(&self) -> Result<(u64, u64), SensorError>;
    /// Board power now, milliwatts.
    fn power_mw(&self) -> Result<u32, SensorError>;
    /// Energy since the driver loaded, millijoules (Volta and later; older GPUs answer an error).
    fn total_energy_mj(&self) -> Result<u64, SensorError>;
}

/// The NVML sensor over any [`NvmlSource`].
pub struct NvmlSensor {
    source: Box<dyn NvmlSource>,
    name: String,
    vram_total: Option<u64>,
    unsupported: Vec<String>,
    has_energy_counter: bool,
}

impl std::fmt::Debug for NvmlSensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSensor")
            .field("name", &self.name)
            .field("vram_total", &self.vram_total)
            .field("has_energy_counter", &self.has_energy_counter)
            .finish()
    }
}

impl NvmlSensor {
    /// Wraps a source: reads its name and VRAM size, and checks which queries it answers.
    pub fn new(source: Box<dyn NvmlSource>) -> Result<Self, SensorError> {
        let name = source.name()?;
        let mut unsupported = Vec::new();
        let vram_total = match source.memory() {
            Ok((_, total)) => Some(total),
            Err(e) => {
                unsupported.push(format!("memory: {e}"));
                None
            }
        };
        if let Err(e) = source.utilization() {
            unsupported.push(format!("utilization: {e}"));
        }
        if let Err(e) = source.power_mw() {
            unsupported.push(format!("power: {e}"));
        }
        let has_energy_counter = match source.total_energy_mj() {
            Ok(_) => true,
            Err(e) => {
                unsupported.push(format!("total energy: {e} (power is integrated instead)"));
                false
            }
        };
        Ok(Self {
            source,
            name,
            vram_total,
            unsupported,
            has_energy_counter,
        })
    }

    /// Queries that failed when the sensor was opened.
    pub fn unsupported(&self) -> &[String] {
        &self.unsupported
    }

    /// One line on what was found.
    pub fn summary(&self) -> String {
        format!(
            "{}, {} MiB VRAM, {}",
            self.name,
            self.vram_total.unwrap_or(0) / (1024 * 1024),
            if self.has_energy_counter {
                "energy counter"
            } else {
                "no energy counter"
            }
        )
    }
}

impl PowerSensor for NvmlSensor {
    fn name(&self) -> &'static str {
        "nvml"
    }

    fn source(&self) -> EnergySource {
        EnergySource::Nvml
    }

    fn covers_cpu(&self) -> bool {
        false
    }

    fn describe(&self, device: &mut DeviceInfo) {
        device.kind = "gpu".into();
        device.gpu = Some(self.name.clone());
        device.vram_bytes = self.vram_total;
    }

    /// Each query is independent: one that fails leaves its field `None`. The read fails only
    /// when every query fails (the GPU fell off the bus, the driver went away).
    fn read(&mut self) -> Result<SensorReading, SensorError> {
        let util = self.source.utilization();
        let memory = self.source.memory();
        let power = self.source.power_mw();
        let energy = if self.has_energy_counter {
            self.source.total_energy_mj().ok()
        } else {
            None
        };
        if let (Err(e), Err(_), Err(_)) = (&util, &memory, &power) {
            return Err(e.clone());
        }
        Ok(SensorReading {
            gpu_util: util.ok().map(|p| (p as f32 / 100.0).clamp(0.0, 1.0)),
            vram_used_bytes: memory.as_ref().ok().map(|m| m.0),
            vram_total_bytes: memory.as_ref().ok().map(|m| m.1),
            power_w: power.ok().map(|mw| mw as f32 / 1000.0),
            energy_counter_mj: energy,
        })
    }
}

/// A recorded NVML reading, for tests and for replaying what a GPU reported (the
/// `sensors` example writes these as TOML).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordedNvml {
    /// Product name.
    pub name: String,
    /// Utilization, percent.
    #[serde(default)]
    pub utilization: Option<u32>,
    /// (used, total) bytes.
    #[serde(default)]
    pub memory: Option<(u64, u64)>,
    /// Power, milliwatts.
    #[serde(default)]
    pub power_mw: Option<u32>,
    /// Energy counter, millijoules; `None` answers "not supported", as pre-Volta GPUs do.
    #[serde(default)]
    pub total_energy_mj: Option<u64>,
}

impl NvmlSource for RecordedNvml {
    fn name(&self) -> Result<String, SensorError> {
        Ok(self.name.clone())
    }
    fn utilization(&self) -> Result<u32, SensorError> {
        self.utilization.ok_or_else(not_supported)
    }
    fn memory(&self) -> Result<(u64, u64), SensorError> {
        self.memory.ok_or_else(not_supported)
    }
    fn power_mw(&self) -> Result<u32, SensorError> {
        self.power_mw.ok_or_else(not_supported)
    }
    fn total_energy_mj(&self) -> Result<u64, SensorError> {
        self.total_energy_mj.ok_or_else(not_supported)
    }
}

impl RecordedNvml {
    /// Records what `source` answers now.
    pub fn record(source: &dyn NvmlSource) -> Result<Self, SensorError> {
        Ok(Self {
            name: source.name()?,
            utilization: source.utilization().ok(),
            memory: source.memory().ok(),
            power_mw: source.power_mw().ok(),
            total_energy_mj: source.total_energy_mj().ok(),
        })
    }
}

fn not_supported() -> SensorError {
    SensorError::Nvml("not supported on this device".into())
}

/// The real NVML, through nvml-wrapper (loads `libnvidia-ml` at run time).
#[cfg(feature = "nvml")]
pub struct NvmlLibrary {
    nvml: nvml_wrapper::Nvml,
    index: u32,
}

#[cfg(feature = "nvml")]
impl NvmlLibrary {
    /// Loads NVML and checks that GPU `index` (NVML's order, PCI bus order) exists.
    pub fn open(index: u32) -> Result<Self, SensorError> {
        let nvml = nvml_wrapper::Nvml::init()
            .map_err(|e| SensorError::Nvml(format!("cannot load libnvidia-ml: {e}")))?;
        let count = nvml.device_count().map_err(nvml_error)?;
        if index >= count {
            return Err(SensorError::Nvml(format!(
                "no GPU {index}: NVML sees {count} device(s)"
            )));
        }
        Ok(Self { nvml, index })
    }

    fn device(&self) -> Result<nvml_wrapper::Device<'_>, SensorError> {
        self.nvml.device_by_index(self.index).map_err(nvml_error)
    }
}

#[cfg(feature = "nvml")]
fn nvml_error(e: nvml_wrapper::error::NvmlError) -> SensorError {
    SensorError::Nvml(e.to_string())
}

#[cfg(feature = "nvml")]
impl NvmlSource for NvmlLibrary {
    fn name(&self) -> Result<String, SensorError> {
        self.device()?.name().map_err(nvml_error)
    }
    fn utilization(&self) -> Result<u32, SensorError> {
        Ok(self.device()?.utilization_rates().map_err(nvml_error)?.gpu)
    }
    fn memory(&self) -> Result<(u64, u64), SensorError> {
        let m = self.device()?.memory_info().map_err(nvml_error)?;
        Ok((m.used, m.total))
    }
    fn power_mw(&self) -> Result<u32, SensorError> {
        self.device()?.power_usage().map_err(nvml_error)
    }
    fn total_energy_mj(&self) -> Result<u64, SensorError> {
        self.device()?
            .total_energy_consumption()
            .map_err(nvml_error)
    }
}
