//! Device telemetry: CPU and RAM (sysinfo), GPU and power sensors (NVML, Jetson sysfs, RAPL),
//! and the labelled energy model used where no power sensor is readable. See [`sensor`] for the
//! order in which sensors are tried.

mod energy;
pub mod jetson;
pub mod nvml;
pub mod rapl;
pub mod sensor;
mod system;

pub use energy::{BatchAttribution, BatchEnergy, BatchToken, EnergyMeter};
pub use sensor::{
    detected_device_info, probe_sensors, select_sensors, select_sensors_with, PowerSensor,
    SensorAttempt, SensorError, SensorKind, SensorOptions, SensorReading, SensorReport, SensorSet,
    SensorTick,
};
pub use system::{device_info, SystemReading, SystemSampler};
