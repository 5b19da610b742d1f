//! Prints what the agent's sensors see: the probe report, then a few telemetry ticks.
//!
//! ```text
//! cargo run -p slim-agent --example sensors                      # probe `/`, 5 ticks of 1 s
//! cargo run -p slim-agent --example sensors -- --root agent/tests/fixtures/jetson-new-hwmon
//! cargo run -p slim-agent --example sensors -- --ticks 10 --interval-ms 500 --record nvml.toml
//! ```
//!
//! `--record FILE` writes the raw NVML answers of each tick as TOML (the format of
//! `agent/tests/fixtures/nvml/*.toml`), so a GPU's readings can be replayed in tests.

use std::{path::PathBuf, time::Duration};

use slim_agent::telemetry::{
    device_info,
    nvml::{NvmlSource, RecordedNvml},
    select_sensors, SensorOptions, SystemSampler,
};

#[derive(serde::Serialize)]
struct Recording {
    note: String,
    interval_ms: u64,
    reading: Vec<RecordedNvml>,
}

fn main() -> anyhow::Result<()> {
    let mut root = PathBuf::from("/");
    let mut ticks = 5u32;
    let mut interval_ms = 1000u64;
    let mut record: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--root" => root = value()?.into(),
            "--ticks" => ticks = value()?.parse()?,
            "--interval-ms" => interval_ms = value()?.parse()?,
            "--record" => record = Some(value()?.into()),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let options = SensorOptions {
        sysfs_root: root,
        batches_on_gpu: true,
        ..SensorOptions::default()
    };
    let (mut sensors, report) = select_sensors(&options);
    print!("{report}");
    println!("device: {:?}", sensors.describe(device_info()));

    #[cfg(feature = "nvml")]
    let raw: Option<Box<dyn NvmlSource>> = record
        .as_ref()
        .and_then(|_| slim_agent::telemetry::sensor::open_nvml().ok());
    #[cfg(not(feature = "nvml"))]
    let raw: Option<Box<dyn NvmlSource>> = None;
    let mut recorded = Vec::new();

    let mut sampler = SystemSampler::new();
    let mut last = std::time::Instant::now();
    for i in 0..ticks {
        std::thread::sleep(Duration::from_millis(interval_ms));
        let system = sampler.sample();
        let now = std::time::Instant::now();
        let tick = sensors.read(&system, now.duration_since(last).as_secs_f64());
        last = now;
        println!(
            "tick {i}: gpu_util {:?}, vram {:?}/{:?} B, power {:.2} W, energy {:.3} J ({:?}), batch of 1 s alone: {:.3} J",
            tick.gpu_util,
            tick.vram_used_bytes,
            tick.vram_total_bytes,
            tick.power_w,
            tick.energy_j,
            tick.energy_source,
            sensors.energy.batch_energy_j(1.0, 1),
        );
        if let Some(src) = &raw {
            recorded.push(RecordedNvml::record(src.as_ref())?);
        }
    }
    if let Some(path) = record {
        let rec = Recording {
            note: format!(
                "recorded by `cargo run -p slim-agent --example sensors -- --record` every {interval_ms} ms"
            ),
            interval_ms,
            reading: recorded,
        };
        std::fs::write(&path, toml::to_string(&rec)?)?;
        println!(
            "recorded {} readings to {}",
            rec.reading.len(),
            path.display()
        );
    }
    Ok(())
}
