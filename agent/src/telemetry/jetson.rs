//! NVIDIA Jetson sensors in sysfs: INA3221 power rails, GPU load, unified memory.
//!
//! Every path is read under a root folder (`/` on a device, a fixture tree in tests). Two
//! INA3221 driver layouts exist:
//!
//! - older (L4T ≤ 32, e.g. Xavier on JetPack 4): the NVIDIA IIO driver,
//!   `sys/bus/i2c/drivers/ina3221x/<bus-addr>/iio:device<K>/in_power<N>_input` in mW, named by
//!   `rail_name_<N>`;
//! - newer (L4T ≥ 34, Orin on JetPack 5/6): the mainline hwmon driver,
//!   `sys/bus/i2c/drivers/ina3221/<bus-addr>/hwmon/hwmon<K>/in<N>_input` in mV and
//!   `curr<N>_input` in mA, named by `in<N>_label`.
//!
//! Power is the module's input rail when one is labelled (`VDD_IN`, `POM_5V_IN`, `5V_IN`), else
//! the sum of all connected rails (AGX Xavier and AGX Orin have no input rail). Channels labelled
//! `NC`, and hwmon channels with no current file (the "sum of shunt voltages" channel), are
//! skipped. GPU load is `sys/devices/gpu.0/load` or `sys/devices/platform/gpu.0/load`, per mille.

use std::path::{Path, PathBuf};

use slim_protocol::{DeviceInfo, EnergySource};

use super::sensor::{PowerSensor, SensorError, SensorReading};

/// Labels of rails that carry the whole module's input power.
pub const TOTAL_RAIL_LABELS: &[&str] = &["VDD_IN", "POM_5V_IN", "5V_IN"];

/// Where a rail's power is read.
#[derive(Debug, Clone, PartialEq)]
pub enum RailFiles {
    /// Older IIO driver: power in milliwatts.
    Iio {
        /// `in_power<N>_input`.
        power_mw: PathBuf,
    },
    /// Newer hwmon driver: voltage in millivolts × current in milliamps.
    Hwmon {
        /// `in<N>_input`.
        voltage_mv: PathBuf,
        /// `curr<N>_input`.
        current_ma: PathBuf,
    },
}

/// One INA3221 channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Rail {
    /// Its label (`VDD_IN`, `GPU`, ...), or `channel<N>` when unlabelled.
    pub label: String,
    /// Its files.
    pub files: RailFiles,
}

impl Rail {
    /// Power now, watts.
    pub fn read_w(&self) -> Result<f32, SensorError> {
        match &self.files {
            RailFiles::Iio { power_mw } => Ok(read_number(power_mw)? as f32 / 1000.0),
            RailFiles::Hwmon {
                voltage_mv,
                current_ma,
            } => {
                let mv = read_number(voltage_mv)?;
                let ma = read_number(current_ma)?;
                Ok((mv * ma) as f32 / 1e6)
            }
        }
    }

    /// True when this rail is the module's input.
    pub fn is_total(&self) -> bool {
        TOTAL_RAIL_LABELS
            .iter()
            .any(|t| self.label.eq_ignore_ascii_case(t))
    }
}

/// Reads a whole non-negative integer from a sysfs file.
pub fn read_number(path: &Path) -> Result<i64, SensorError> {
    let text = read_text(path)?;
    let t = text.trim();
    t.parse::<i64>().map_err(|_| SensorError::Parse {
        path: path.to_path_buf(),
        expected: "an integer",
        found: t.chars().take(40).collect(),
    })
}

fn read_text(path: &Path) -> Result<String, SensorError> {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SensorError::Missing {
                path: path.to_path_buf(),
            },
            _ => SensorError::Io {
                path: path.to_path_buf(),
                reason: e.to_string(),
            },
        })
}

/// Sorted sub-folders of `dir` whose name starts with `prefix` (empty when `dir` is absent).
fn subdirs(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// Channel numbers `N` of files named `<prefix>N<suffix>` in `dir`, ascending.
fn channels(dir: &Path, prefix: &str, suffix: &str) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse::<u32>()
                .ok()
        })
        .collect();
    out.sort_unstable();
    out
}

fn label(path: &Path, fallback: String) -> String {
    match read_text(path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => fallback,
    }
}

fn connected(label: &str) -> bool {
    !label.eq_ignore_ascii_case("NC")
}

/// Finds the INA3221 rails under `root`, in both driver layouts.
pub fn discover_rails(root: &Path) -> Vec<Rail> {
    let mut rails = Vec::new();
    // Older: ina3221x IIO driver.
    let old = root.join("sys/bus/i2c/drivers/ina3221x");
    for dev in subdirs(&old, "") {
        for iio in subdirs(&dev, "iio:device") {
            for n in channels(&iio, "in_power", "_input") {
                let label = label(&iio.join(format!("rail_name_{n}")), format!("channel{n}"));
                if connected(&label) {
                    rails.push(Rail {
                        label,
                        files: RailFiles::Iio {
                            power_mw: iio.join(format!("in_power{n}_input")),
                        },
                    });
                }
            }
        }
    }
    // Newer: mainline hwmon driver.
    let new = root.join("sys/bus/i2c/drivers/ina3221");
    for dev in subdirs(&new, "") {
        for hwmon in subdirs(&dev.join("hwmon"), "hwmon") {
            for n in channels(&hwmon, "curr", "_input") {
                let voltage_mv = hwmon.join(format!("in{n}_input"));
                if !voltage_mv.exists() {
                    continue;
                }
                let label = label(&hwmon.join(format!("in{n}_label")), format!("channel{n}"));
                if connected(&label) {
                    rails.push(Rail {
                        label,
                        files: RailFiles::Hwmon {
                            voltage_mv,
                            current_ma: hwmon.join(format!("curr{n}_input")),
                        },
                    });
                }
            }
        }
    }
    rails
}

/// The rails whose sum is the module's power: the input rail when labelled, else all.
pub fn power_rails(rails: &[Rail]) -> Vec<Rail> {
    match rails.iter().find(|r| r.is_total()) {
        Some(total) => vec![total.clone()],
        None => rails.to_vec(),
    }
}

/// The GPU load file under `root`, where there is one.
pub fn gpu_load_path(root: &Path) -> Option<PathBuf> {
    ["sys/devices/gpu.0/load", "sys/devices/platform/gpu.0/load"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())
}

/// Reads a GPU load file (per mille) as 0..1.
pub fn read_gpu_load(path: &Path) -> Result<f32, SensorError> {
    let v = read_number(path)?;
    if !(0..=1000).contains(&v) {
        return Err(SensorError::Parse {
            path: path.to_path_buf(),
            expected: "a load in per mille (0..1000)",
            found: v.to_string(),
        });
    }
    Ok(v as f32 / 1000.0)
}

/// The board's model when `root` is a Jetson (`etc/nv_tegra_release`, or a device-tree model
/// naming a Jetson); an error saying what was looked at otherwise.
pub fn detect_jetson(root: &Path) -> Result<String, SensorError> {
    let model_path = root.join("proc/device-tree/model");
    let model = read_text(&model_path)
        .ok()
        .map(|m| {
            m.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string()
        })
        .filter(|m| !m.is_empty());
    let release = root.join("etc/nv_tegra_release");
    let named_jetson = model.as_ref().is_some_and(|m| {
        let m = m.to_ascii_lowercase();
        m.contains("jetson") || m.contains("tegra")
    });
    if release.is_file() || named_jetson {
        Ok(model.unwrap_or_else(|| "NVIDIA Jetson".into()))
    } else {
        Err(SensorError::NotPresent(format!(
            "not a Jetson: no {} and no Jetson in {}",
            release.display(),
            model_path.display()
        )))
    }
}

/// The Jetson sensor: INA3221 rails and GPU load.
#[derive(Debug, Clone)]
pub struct JetsonSensor {
    model: String,
    rails: Vec<Rail>,
    used: Vec<Rail>,
    gpu_load: Option<PathBuf>,
    warnings: Vec<String>,
}

impl JetsonSensor {
    /// Opens the sensor under `root`; fails when `root` is not a Jetson. A Jetson without rails
    /// (Nano 2GB) or without a GPU load file still opens, with warnings.
    pub fn open(root: &Path) -> Result<Self, SensorError> {
        let model = detect_jetson(root)?;
        let rails = discover_rails(root);
        let used = power_rails(&rails);
        let gpu_load = gpu_load_path(root);
        let mut warnings = Vec::new();
        if rails.is_empty() {
            warnings.push(format!(
                "no INA3221 rails under {} or {}",
                root.join("sys/bus/i2c/drivers/ina3221x").display(),
                root.join("sys/bus/i2c/drivers/ina3221").display()
            ));
        }
        if gpu_load.is_none() {
            warnings.push(format!(
                "no GPU load file ({} or {})",
                root.join("sys/devices/gpu.0/load").display(),
                root.join("sys/devices/platform/gpu.0/load").display()
            ));
        }
        Ok(Self {
            model,
            rails,
            used,
            gpu_load,
            warnings,
        })
    }

    /// Every connected rail found.
    pub fn rails(&self) -> &[Rail] {
        &self.rails
    }

    /// The rails summed into the power figure.
    pub fn power_rails(&self) -> &[Rail] {
        &self.used
    }

    /// The board model.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// What was missing when the sensor was opened.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// One line on what was found.
    pub fn summary(&self) -> String {
        let rails: Vec<&str> = self.rails.iter().map(|r| r.label.as_str()).collect();
        let used: Vec<&str> = self.used.iter().map(|r| r.label.as_str()).collect();
        format!(
            "{}; rails [{}], power = {}; GPU load {}",
            self.model,
            rails.join(", "),
            if used.is_empty() {
                "none".to_string()
            } else {
                used.join(" + ")
            },
            if self.gpu_load.is_some() {
                "found"
            } else {
                "missing"
            }
        )
    }

    /// Module power now, watts: the input rail, or the sum of the rails.
    pub fn power_w(&self) -> Result<Option<f32>, SensorError> {
        if self.used.is_empty() {
            return Ok(None);
        }
        let mut sum = 0.0;
        for r in &self.used {
            sum += r.read_w()?;
        }
        Ok(Some(sum))
    }
}

impl PowerSensor for JetsonSensor {
    fn name(&self) -> &'static str {
        "jetson"
    }

    fn source(&self) -> EnergySource {
        EnergySource::Ina3221
    }

    fn unified_memory(&self) -> bool {
        true
    }

    fn covers_cpu(&self) -> bool {
        true
    }

    fn describe(&self, device: &mut DeviceInfo) {
        device.kind = "jetson".into();
        device.gpu = Some(format!("{} (integrated GPU)", self.model));
        device.vram_bytes = Some(device.ram_bytes);
    }

    /// Fails when a rail in use or the GPU load file cannot be read or parsed.
    fn read(&mut self) -> Result<SensorReading, SensorError> {
        let gpu_util = self.gpu_load.as_deref().map(read_gpu_load).transpose()?;
        Ok(SensorReading {
            gpu_util,
            vram_used_bytes: None,
            vram_total_bytes: None,
            power_w: self.power_w()?,
            energy_counter_mj: None,
        })
    }
}
