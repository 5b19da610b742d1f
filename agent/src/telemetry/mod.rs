//! Device telemetry: sensors and the labelled energy model.

mod energy;
mod system;

pub use energy::EnergyMeter;
pub use system::{device_info, SystemSampler};
