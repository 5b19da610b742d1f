//! The power/GPU sensor abstraction, the order in which sensors are tried, and the probe report.
//!
//! Order, decided once at start by [`select_sensors`]:
//!
//! 1. **NVML** (cargo feature `nvml`, on by default; `libnvidia-ml` is loaded at run time, so a
//!    machine without an NVIDIA driver simply fails this step). GPU utilization, VRAM, power and
//!    the total-energy counter. NVML measures the GPU board only, so its power is used for energy
//!    only when the batches run on the GPU (`batches_on_gpu`); otherwise NVML still reports GPU
//!    utilization and VRAM, and energy comes from the power model.
//! 2. **Jetson** (sysfs, no NVML): INA3221 rails (both driver layouts, see [`super::jetson`]),
//!    GPU load, unified memory (VRAM = RAM). The rails cover the whole module, so they are used
//!    for energy whatever the backend.
//! 3. **RAPL** (sysfs `/sys/class/powercap`, see [`super::rapl`]): the CPU packages' energy
//!    counters, tried only when no sensor chosen so far measures the batches' energy: no sensor
//!    at all, or a GPU sensor (NVML without power, or NVML while batches run on the CPU) while
//!    batches run on the CPU. It is then the energy source, labelled `rapl`; GPU figures still
//!    come from NVML when NVML was found.
//! 4. **Power model**: idle + utilization × (max − idle) from the device profile, labelled
//!    `model`.
//!
//! A sensor that is found but cannot read power still supplies what it can (utilization, VRAM);
//! energy then comes from RAPL or the model. Every figure carries its [`EnergySource`].

use std::path::{Path, PathBuf};

use slim_protocol::{DeviceInfo, EnergySource};

use super::{
    jetson::JetsonSensor,
    nvml::{NvmlSensor, NvmlSource},
    rapl::RaplSensor,
    EnergyMeter, SystemReading,
};

/// Why a sensor could not be used or read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SensorError {
    /// A file the sensor needs is not there.
    #[error("{path}: not found")]
    Missing {
        /// The file or folder looked for.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("{path}: cannot read: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// A file held something other than the number expected.
    #[error("{path}: expected {expected}, found {found:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was expected.
        expected: &'static str,
        /// What was there (trimmed, at most 40 characters).
        found: String,
    },
    /// NVML is absent, failed, or does not support a query.
    #[error("NVML: {0}")]
    Nvml(String),
    /// The sensor is not present on this machine.
    #[error("{0}")]
    NotPresent(String),
}

/// One reading of a GPU/power sensor. Fields the sensor cannot read are `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SensorReading {
    /// GPU utilization, 0..1.
    pub gpu_util: Option<f32>,
    /// VRAM in use (not set on unified memory; see [`SensorSet::read`]).
    pub vram_used_bytes: Option<u64>,
    /// VRAM in total.
    pub vram_total_bytes: Option<u64>,
    /// Power now, watts.
    pub power_w: Option<f32>,
    /// A hardware energy counter, millijoules, when the sensor keeps one (NVML on Volta and
    /// later, RAPL); differences between readings are the energy used in between.
    pub energy_counter_mj: Option<u64>,
}

/// A GPU and/or power sensor chosen at start.
pub trait PowerSensor: Send + std::fmt::Debug {
    /// Short name: `nvml`, `jetson` or `rapl`.
    fn name(&self) -> &'static str;
    /// The label its power and energy figures carry.
    fn source(&self) -> EnergySource;
    /// True where the GPU shares the system RAM (Jetson): VRAM figures are then RAM figures.
    fn unified_memory(&self) -> bool {
        false
    }
    /// True when the power it reads includes the power of the CPU running batches.
    fn covers_cpu(&self) -> bool;
    /// Fills the GPU facts of `device` (kind, GPU name, VRAM).
    fn describe(&self, device: &mut DeviceInfo);
    /// Reads the sensor. Errors are clear and never panic; fields it cannot read are `None`.
    fn read(&mut self) -> Result<SensorReading, SensorError>;
}

/// Options of [`select_sensors`].
#[derive(Debug, Clone)]
pub struct SensorOptions {
    /// Root of the file system the sysfs and `/etc`, `/proc` paths are read under (`/` on a
    /// real device; a fixture tree in tests).
    pub sysfs_root: PathBuf,
    /// Whether batches run on the GPU (CUDA backend). NVML power covers the GPU board only, so
    /// it is used for energy only then.
    pub batches_on_gpu: bool,
    /// Power model: idle watts.
    pub idle_power_w: f32,
    /// Power model: full-load watts.
    pub max_power_w: f32,
    /// Cores for the power model's per-batch share.
    pub cores: usize,
}

impl Default for SensorOptions {
    fn default() -> Self {
        Self {
            sysfs_root: PathBuf::from("/"),
            batches_on_gpu: false,
            idle_power_w: 10.0,
            max_power_w: 65.0,
            cores: 1,
        }
    }
}

/// Which sensor family was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorKind {
    /// NVIDIA NVML.
    Nvml,
    /// Jetson sysfs (INA3221 rails, GPU load).
    Jetson,
    /// RAPL energy counters of the CPU packages only (no GPU sensor).
    Rapl,
    /// No sensor: the power model only.
    Model,
}

/// One step of the fallback order and what came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorAttempt {
    /// `nvml`, `jetson`, `rapl` or `model`.
    pub sensor: &'static str,
    /// What was found (`Ok`) or why it was not used (`Err`).
    pub outcome: Result<String, String>,
}

/// What [`probe_sensors`] found, for a `doctor` command to print.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorReport {
    /// The sensor chosen for GPU figures (`Rapl` when RAPL is the only sensor, `Model` when
    /// there is none). Energy may come from another one: see `energy_source`.
    pub chosen: SensorKind,
    /// The label of the power and energy figures.
    pub energy_source: EnergySource,
    /// Why energy comes from where it does.
    pub energy_reason: String,
    /// Every step tried, in order.
    pub attempts: Vec<SensorAttempt>,
    /// Problems met while reading the chosen sensor (unsupported queries, unreadable rails).
    pub warnings: Vec<String>,
    /// The first reading of the chosen sensor.
    pub first_reading: Option<SensorReading>,
}

impl std::fmt::Display for SensorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "sensor: {:?}", self.chosen)?;
        writeln!(
            f,
            "energy source: {:?} ({})",
            self.energy_source, self.energy_reason
        )?;
        for a in &self.attempts {
            match &a.outcome {
                Ok(found) => writeln!(f, "  {:<7} found: {found}", a.sensor)?,
                Err(why) => writeln!(f, "  {:<7} not used: {why}", a.sensor)?,
            }
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        if let Some(r) = &self.first_reading {
            writeln!(f, "first reading: {r:?}")?;
        }
        Ok(())
    }
}

/// The chosen sensor with its energy meter; the telemetry task owns it.
#[derive(Debug)]
pub struct SensorSet {
    sensor: Option<Box<dyn PowerSensor>>,
    /// A second sensor read for energy only (RAPL beside an NVML that does not measure the
    /// batches).
    power: Option<Box<dyn PowerSensor>>,
    /// The meter: measured when a sensor's power is used, else the model.
    pub energy: EnergyMeter,
    batches_on_gpu: bool,
    failures: u64,
    power_failures: u64,
}

/// What one telemetry tick reports from the sensors.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorTick {
    /// GPU utilization, 0..1.
    pub gpu_util: Option<f32>,
    /// VRAM in use (RAM on unified memory).
    pub vram_used_bytes: Option<u64>,
    /// VRAM in total (RAM on unified memory).
    pub vram_total_bytes: Option<u64>,
    /// Power now, watts.
    pub power_w: f32,
    /// Energy since start, joules.
    pub energy_j: f64,
    /// Label of `power_w` and `energy_j`.
    pub energy_source: EnergySource,
}

impl SensorSet {
    /// No sensor: the labelled power model only.
    pub fn model_only(options: &SensorOptions) -> Self {
        Self {
            sensor: None,
            power: None,
            energy: EnergyMeter::model(options.idle_power_w, options.max_power_w, options.cores),
            batches_on_gpu: options.batches_on_gpu,
            failures: 0,
            power_failures: 0,
        }
    }

    /// The chosen sensor's name, `model` when there is none.
    pub fn name(&self) -> &'static str {
        self.sensor.as_ref().map_or("model", |s| s.name())
    }

    /// The name of the sensor energy is read from, `model` when it is modelled.
    pub fn energy_sensor_name(&self) -> &'static str {
        match (&self.power, &self.sensor) {
            (Some(p), _) => p.name(),
            (None, Some(s)) if self.energy.is_measured() => s.name(),
            _ => "model",
        }
    }

    /// Adds the GPU facts of the chosen sensor to `device` (from [`super::device_info`]).
    pub fn describe(&self, mut device: DeviceInfo) -> DeviceInfo {
        if let Some(s) = &self.sensor {
            s.describe(&mut device);
            if s.unified_memory() {
                device.vram_bytes = Some(device.ram_bytes);
            }
        }
        device
    }

    /// Reads the sensor, advances the energy meter by `seconds` and returns the tick's figures.
    /// A failed read keeps the telemetry going: GPU figures are `None` for the tick and power is
    /// held at the last measured value (still labelled with the sensor; logged).
    pub fn read(&mut self, system: &SystemReading, seconds: f64) -> SensorTick {
        let reading = read_logged(self.sensor.as_deref_mut(), &mut self.failures);
        let power_reading = read_logged(self.power.as_deref_mut(), &mut self.power_failures);
        let energy_reading = if self.power.is_some() {
            power_reading.as_ref()
        } else {
            reading.as_ref()
        };
        let unified = self.sensor.as_ref().is_some_and(|s| s.unified_memory());
        let gpu_util = reading.as_ref().and_then(|r| r.gpu_util);
        let model_util = if self.batches_on_gpu {
            gpu_util.unwrap_or(system.cpu_util)
        } else {
            system.cpu_util
        };
        let power_w = self.energy.tick(model_util, energy_reading, seconds);
        let (vram_used_bytes, vram_total_bytes) = if unified {
            (Some(system.ram_used_bytes), Some(system.ram_total_bytes))
        } else {
            (
                reading.as_ref().and_then(|r| r.vram_used_bytes),
                reading.as_ref().and_then(|r| r.vram_total_bytes),
            )
        };
        SensorTick {
            gpu_util,
            vram_used_bytes,
            vram_total_bytes,
            power_w,
            energy_j: self.energy.total_j(),
            energy_source: self.energy.source,
        }
    }
}

/// Reads `sensor` (when there is one), counting and logging failures (the first, then at powers
/// of two).
fn read_logged(
    sensor: Option<&mut (dyn PowerSensor + 'static)>,
    failures: &mut u64,
) -> Option<SensorReading> {
    let sensor = sensor?;
    match sensor.read() {
        Ok(r) => {
            *failures = 0;
            Some(r)
        }
        Err(e) => {
            *failures += 1;
            if *failures == 1 || failures.is_power_of_two() {
                tracing::warn!(sensor = sensor.name(), failures = *failures, error = %e,
                    "sensor read failed; holding the last power reading");
            }
            None
        }
    }
}

/// Opens NVML for real (feature `nvml`), device 0.
pub fn open_nvml() -> Result<Box<dyn NvmlSource>, SensorError> {
    #[cfg(feature = "nvml")]
    {
        super::nvml::NvmlLibrary::open(0).map(|s| Box::new(s) as Box<dyn NvmlSource>)
    }
    #[cfg(not(feature = "nvml"))]
    {
        Err(SensorError::NotPresent(
            "built without the `nvml` cargo feature".into(),
        ))
    }
}

/// Chooses the sensors in the documented order, with the real NVML.
pub fn select_sensors(options: &SensorOptions) -> (SensorSet, SensorReport) {
    select_sensors_with(open_nvml, options)
}

/// Chooses the sensors in the documented order; `open_nvml` stands in for NVML (tests pass a
/// recorded reading, or an error for "no NVML").
pub fn select_sensors_with(
    open_nvml: impl FnOnce() -> Result<Box<dyn NvmlSource>, SensorError>,
    options: &SensorOptions,
) -> (SensorSet, SensorReport) {
    let mut log = ProbeLog::default();
    // 1. NVML, 2. Jetson sysfs.
    let mut chosen = choose_gpu_sensor(open_nvml, options, &mut log);
    // 3. RAPL, for energy when nothing chosen so far measures the batches' energy.
    let power = add_rapl(&mut chosen, options, &mut log);
    // 4. The power model, for energy whenever no sensor can supply it.
    let EnergyChoice {
        kind,
        sensor,
        energy,
        reason: energy_reason,
        first,
    } = choose_energy(chosen, power.as_ref(), options);
    log.attempts.push(SensorAttempt {
        sensor: "model",
        outcome: Ok(format!(
            "idle {} W, max {} W",
            options.idle_power_w, options.max_power_w
        )),
    });

    for a in &log.attempts {
        match &a.outcome {
            Ok(found) => tracing::debug!(sensor = a.sensor, "sensor found: {found}"),
            Err(why) => tracing::debug!(sensor = a.sensor, "sensor not used: {why}"),
        }
    }
    tracing::debug!(chosen = ?kind, energy_source = ?energy.source, "energy: {energy_reason}");

    let report = SensorReport {
        chosen: kind,
        energy_source: energy.source,
        energy_reason,
        attempts: log.attempts,
        warnings: log.warnings,
        first_reading: first,
    };
    let set = SensorSet {
        sensor,
        power: power.map(|(rapl, _)| rapl),
        energy,
        batches_on_gpu: options.batches_on_gpu,
        failures: 0,
        power_failures: 0,
    };
    (set, report)
}

/// A sensor chosen for GPU figures, with its first reading.
type Chosen = (SensorKind, Box<dyn PowerSensor>, SensorReading);

/// Steps 1 and 2: NVML when it reads power, else the Jetson rails, else an NVML that reads no
/// power (kept only if no Jetson rails are found: a Jetson whose NVML answers utilization but
/// not power is better served by its rails).
fn choose_gpu_sensor(
    open_nvml: impl FnOnce() -> Result<Box<dyn NvmlSource>, SensorError>,
    options: &SensorOptions,
    log: &mut ProbeLog,
) -> Option<Chosen> {
    let (mut chosen, nvml_without_power) = match probe_nvml(open_nvml, log) {
        Some((sensor, first)) if first.power_w.is_some() => {
            (Some((SensorKind::Nvml, sensor, first)), None)
        }
        without_power => (None, without_power),
    };
    if chosen.is_none() {
        chosen = probe_jetson(options, nvml_without_power.is_some(), log)
            .map(|(sensor, first)| (SensorKind::Jetson, sensor, first));
    } else {
        log.attempts.push(SensorAttempt {
            sensor: "jetson",
            outcome: Err("not tried: NVML was chosen".into()),
        });
    }
    if chosen.is_none() {
        if let Some((sensor, first)) = nvml_without_power {
            chosen = Some((SensorKind::Nvml, sensor, first));
        }
    }
    chosen
}

/// Step 3: probes RAPL unless the chosen sensor measures the batches' energy or the batches run
/// on a GPU. RAPL becomes the chosen sensor when there is none, else it is returned as a second
/// sensor read for energy only.
fn add_rapl(
    chosen: &mut Option<Chosen>,
    options: &SensorOptions,
    log: &mut ProbeLog,
) -> Option<Probed> {
    let why_not = match &*chosen {
        Some((_, sensor, first)) if measures_batches(sensor.as_ref(), first, options) => {
            format!("not tried: {} measures the batches' energy", sensor.name())
        }
        Some((_, sensor, _)) if options.batches_on_gpu => format!(
            "not tried: batches run on the GPU ({}), which RAPL does not measure",
            sensor.name()
        ),
        _ => {
            let rapl = probe_rapl(options, log)?;
            if chosen.is_none() {
                *chosen = Some((SensorKind::Rapl, rapl.0, rapl.1));
                return None;
            }
            return Some(rapl);
        }
    };
    log.attempts.push(SensorAttempt {
        sensor: "rapl",
        outcome: Err(why_not),
    });
    None
}

/// What step 4 settled: the sensor for GPU figures and the energy meter, with why.
struct EnergyChoice {
    kind: SensorKind,
    sensor: Option<Box<dyn PowerSensor>>,
    energy: EnergyMeter,
    reason: String,
    first: Option<SensorReading>,
}

/// Step 4: the energy meter: RAPL's counter when it was added beside the chosen sensor, the
/// chosen sensor's when it measures the batches, else the power model.
fn choose_energy(
    chosen: Option<Chosen>,
    power: Option<&Probed>,
    options: &SensorOptions,
) -> EnergyChoice {
    let Some((kind, sensor, first)) = chosen else {
        return EnergyChoice {
            kind: SensorKind::Model,
            sensor: None,
            energy: model_meter(options),
            reason: "no power sensor found".to_string(),
            first: None,
        };
    };
    let (energy, reason) = match power {
        Some((rapl, rapl_first)) => (
            measured_meter(rapl.as_ref(), rapl_first, options),
            format!(
                "rapl energy counter, as {} does not measure where batches run",
                sensor.name()
            ),
        ),
        None => energy_meter_for(sensor.as_ref(), &first, options),
    };
    EnergyChoice {
        kind,
        sensor: Some(sensor),
        energy,
        reason,
        first: Some(first),
    }
}

/// What sensor selection tried and noticed, for the report.
#[derive(Default)]
struct ProbeLog {
    attempts: Vec<SensorAttempt>,
    warnings: Vec<String>,
}

/// A sensor that answered, with its first reading.
type Probed = (Box<dyn PowerSensor>, SensorReading);

/// Opens NVML and reads it once; `None` when it cannot be opened or read.
fn probe_nvml(
    open_nvml: impl FnOnce() -> Result<Box<dyn NvmlSource>, SensorError>,
    log: &mut ProbeLog,
) -> Option<Probed> {
    let outcome = match open_nvml().and_then(NvmlSensor::new) {
        Ok(mut sensor) => match sensor.read() {
            Ok(first) => {
                log.warnings
                    .extend(sensor.unsupported().iter().map(|w| format!("nvml: {w}")));
                let summary = match first.power_w {
                    Some(_) => sensor.summary(),
                    None => format!("{} (reads no power)", sensor.summary()),
                };
                log.attempts.push(SensorAttempt {
                    sensor: "nvml",
                    outcome: Ok(summary),
                });
                return Some((Box::new(sensor), first));
            }
            Err(e) => Err(format!("opened but unreadable: {e}")),
        },
        Err(e) => Err(e.to_string()),
    };
    log.attempts.push(SensorAttempt {
        sensor: "nvml",
        outcome,
    });
    None
}

/// Opens the Jetson rails under `options.sysfs_root`; they are chosen when they read power, or
/// when there is no NVML (without power) to fall back on.
fn probe_jetson(
    options: &SensorOptions,
    have_nvml_without_power: bool,
    log: &mut ProbeLog,
) -> Option<Probed> {
    let mut sensor = match JetsonSensor::open(&options.sysfs_root) {
        Ok(sensor) => sensor,
        Err(e) => {
            log.attempts.push(SensorAttempt {
                sensor: "jetson",
                outcome: Err(e.to_string()),
            });
            return None;
        }
    };
    log.warnings
        .extend(sensor.warnings().iter().map(|w| format!("jetson: {w}")));
    let first = match sensor.read() {
        Ok(r) => r,
        Err(e) => {
            log.warnings.push(format!("jetson: first read failed: {e}"));
            SensorReading::default()
        }
    };
    log.attempts.push(SensorAttempt {
        sensor: "jetson",
        outcome: Ok(sensor.summary()),
    });
    let has_power = first.power_w.is_some();
    (has_power || !have_nvml_without_power)
        .then(|| (Box::new(sensor) as Box<dyn PowerSensor>, first))
}

/// Opens the RAPL package counters under `options.sysfs_root`. Domains that exist but cannot be
/// read (root-only `energy_uj`) also add a warning saying how to grant access.
fn probe_rapl(options: &SensorOptions, log: &mut ProbeLog) -> Option<Probed> {
    let outcome = match RaplSensor::open(&options.sysfs_root) {
        Ok(mut sensor) => {
            log.warnings
                .extend(sensor.warnings().iter().map(|w| format!("rapl: {w}")));
            match sensor.read() {
                Ok(first) => {
                    log.attempts.push(SensorAttempt {
                        sensor: "rapl",
                        outcome: Ok(sensor.summary()),
                    });
                    return Some((Box::new(sensor), first));
                }
                Err(e) => Err(format!("opened but unreadable: {e}")),
            }
        }
        Err(e @ SensorError::NotPresent(_)) => Err(e.to_string()),
        Err(e) => {
            log.warnings
                .push(format!("rapl: package counters found but unreadable: {e}"));
            Err(e.to_string())
        }
    };
    log.attempts.push(SensorAttempt {
        sensor: "rapl",
        outcome,
    });
    None
}

/// True when `sensor` (whose first reading is `first`) measures the energy of the batches: it
/// reads power or energy, and covers the CPU or the batches run on the GPU it measures.
fn measures_batches(
    sensor: &dyn PowerSensor,
    first: &SensorReading,
    options: &SensorOptions,
) -> bool {
    let reads_power = first.power_w.is_some() || first.energy_counter_mj.is_some();
    reads_power && (sensor.covers_cpu() || options.batches_on_gpu)
}

fn measured_meter(
    sensor: &dyn PowerSensor,
    first: &SensorReading,
    options: &SensorOptions,
) -> EnergyMeter {
    EnergyMeter::measured(
        sensor.source(),
        first,
        options.idle_power_w,
        options.max_power_w,
        options.cores,
    )
}

fn model_meter(options: &SensorOptions) -> EnergyMeter {
    EnergyMeter::model(options.idle_power_w, options.max_power_w, options.cores)
}

/// The energy meter for the chosen sensor, and why: measured when it reads power that covers
/// where batches run, else the power model.
fn energy_meter_for(
    sensor: &dyn PowerSensor,
    first: &SensorReading,
    options: &SensorOptions,
) -> (EnergyMeter, String) {
    if first.power_w.is_none() && first.energy_counter_mj.is_none() {
        (
            model_meter(options),
            format!("{} reads no power; using the power model", sensor.name()),
        )
    } else if !measures_batches(sensor, first, options) {
        (
            model_meter(options),
            format!(
                "{} measures the GPU only and batches run on the CPU; using the power model",
                sensor.name()
            ),
        )
    } else {
        (
            measured_meter(sensor, first, options),
            match first.energy_counter_mj {
                Some(_) => format!("{} energy counter", sensor.name()),
                None => format!("{} power integrated over time", sensor.name()),
            },
        )
    }
}

/// Probes the sensors under `sysfs_root` (`/` on a real device) and says what was found, what
/// failed and why. Prints nothing; a `doctor` command prints the report (it implements
/// `Display`). The energy source is judged as if batches ran on the GPU, so the report says
/// what the sensor can measure.
pub fn probe_sensors(sysfs_root: impl AsRef<Path>) -> SensorReport {
    let options = SensorOptions {
        sysfs_root: sysfs_root.as_ref().to_path_buf(),
        batches_on_gpu: true,
        ..SensorOptions::default()
    };
    select_sensors(&options).1
}

/// [`super::device_info`] plus the GPU facts of whichever sensor is present under `/`.
pub fn detected_device_info() -> DeviceInfo {
    let (set, _) = select_sensors(&SensorOptions::default());
    set.describe(super::device_info())
}
