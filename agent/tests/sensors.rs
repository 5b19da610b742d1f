//! Sensor readers on recorded fixtures: Jetson sysfs trees (both INA3221 driver layouts) under
//! `tests/fixtures/`, and NVML readings recorded from a GPU (`tests/fixtures/nvml/*.toml`).
//! Nothing here needs a GPU or a Jetson, except the `#[ignore]`d `nvml_reads_this_machines_gpu`.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use slim_agent::telemetry::{
    jetson::{self, JetsonSensor, RailFiles},
    nvml::{NvmlSensor, NvmlSource, RecordedNvml},
    probe_sensors,
    rapl::{self, RaplSensor},
    select_sensors_with, BatchAttribution, EnergyMeter, PowerSensor, SensorError, SensorKind,
    SensorOptions, SensorReading, SystemReading,
};
use slim_protocol::{DeviceInfo, EnergySource};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn no_nvml() -> Result<Box<dyn NvmlSource>, SensorError> {
    Err(SensorError::Nvml("cannot load libnvidia-ml (test)".into()))
}

fn options(root: PathBuf, batches_on_gpu: bool) -> SensorOptions {
    SensorOptions {
        sysfs_root: root,
        batches_on_gpu,
        idle_power_w: 10.0,
        max_power_w: 60.0,
        cores: 4,
    }
}

fn system() -> SystemReading {
    SystemReading {
        cpu_util: 0.5,
        ram_used_bytes: 3 << 30,
        ram_total_bytes: 32 << 30,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-3 * b.abs().max(1.0)
}

/// A fresh copy of a fixture tree, to damage in a test; removed when dropped.
fn scratch_copy(name: &str, tag: &str) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("slim-sensors-{tag}-"))
        .tempdir()
        .unwrap();
    copy(&fixture(name), dir.path());
    dir
}

// ---------------------------------------------------------------- Jetson, older layout

#[test]
fn old_ina3221x_layout_on_agx_xavier_sums_six_rails_in_milliwatts() {
    let root = fixture("jetson-old-ina3221x");
    let rails = jetson::discover_rails(&root);
    let labels: Vec<&str> = rails.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"]);
    assert!(rails
        .iter()
        .all(|r| matches!(r.files, RailFiles::Iio { .. })));

    let mut s = JetsonSensor::open(&root).unwrap();
    assert_eq!(s.model(), "Jetson-AGX");
    assert_eq!(s.power_rails().len(), 6, "no input rail: all rails summed");
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    let r = s.read().unwrap();
    // 1530 + 2142 + 2601 + 0 + 612 + 1840 mW
    assert!(close(r.power_w.unwrap() as f64, 8.725), "{r:?}");
    assert_eq!(
        r.gpu_util,
        Some(0.376),
        "sys/devices/gpu.0/load is per mille"
    );
    assert_eq!(r.energy_counter_mj, None);
}

// ---------------------------------------------------------------- Jetson, newer layout

#[test]
fn new_hwmon_layout_on_agx_orin_multiplies_mv_by_ma_and_skips_nc_and_shunt_sum() {
    let root = fixture("jetson-new-hwmon");
    let rails = jetson::discover_rails(&root);
    let labels: Vec<&str> = rails.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "VDD_GPU_SOC",
            "VDD_CPU_CV",
            "VIN_SYS_5V0",
            "VDDQ_VDD2_1V8AO"
        ],
        "NC channels and channel 7 (sum of shunt voltages, no current file) are skipped"
    );
    assert!(rails
        .iter()
        .all(|r| matches!(r.files, RailFiles::Hwmon { .. })));

    let mut s = JetsonSensor::open(&root).unwrap();
    assert_eq!(s.model(), "NVIDIA Jetson AGX Orin Developer Kit");
    let r = s.read().unwrap();
    // 4984×1216 + 4984×482 + 4976×856 + 4992×224 µW
    let expected = (4984.0 * 1216.0 + 4984.0 * 482.0 + 4976.0 * 856.0 + 4992.0 * 224.0) / 1e6;
    assert!(close(r.power_w.unwrap() as f64, expected), "{r:?}");
    assert_eq!(
        r.gpu_util,
        Some(0.612),
        "sys/devices/platform/gpu.0/load is read too"
    );
}

#[test]
fn an_input_rail_is_used_alone_instead_of_the_sum() {
    let root = fixture("jetson-orin-nano-hwmon");
    let mut s = JetsonSensor::open(&root).unwrap();
    let used: Vec<&str> = s.power_rails().iter().map(|r| r.label.as_str()).collect();
    assert_eq!(used, ["VDD_IN"]);
    assert_eq!(s.rails().len(), 3);
    let r = s.read().unwrap();
    assert!(close(r.power_w.unwrap() as f64, 5072.0 * 1124.0 / 1e6));
    assert_eq!(r.gpu_util, None, "this tree has no GPU load file");
    assert!(
        s.warnings().iter().any(|w| w.contains("no GPU load file")),
        "{:?}",
        s.warnings()
    );
}

#[test]
fn jetson_device_info_is_unified_memory() {
    let (set, report) = select_sensors_with(no_nvml, &options(fixture("jetson-new-hwmon"), false));
    assert_eq!(report.chosen, SensorKind::Jetson);
    let device = set.describe(DeviceInfo {
        kind: "cpu".into(),
        ram_bytes: 64 << 30,
        ..DeviceInfo::default()
    });
    assert_eq!(device.kind, "jetson");
    assert_eq!(device.vram_bytes, Some(64 << 30), "VRAM = RAM");
    assert!(device.gpu.unwrap().contains("AGX Orin"));
}

// ---------------------------------------------------------------- parsers: clear errors

#[test]
fn bad_or_missing_sysfs_files_give_clear_errors_not_panics() {
    let scratch = scratch_copy("jetson-new-hwmon", "bad");
    let root = scratch.path().to_path_buf();
    let hw = root.join("sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3");

    // Garbage in a current file.
    std::fs::write(hw.join("curr2_input"), "n/a\n").unwrap();
    let mut s = JetsonSensor::open(&root).unwrap();
    let e = s.read().unwrap_err();
    assert!(
        matches!(&e, SensorError::Parse { path, found, .. } if path.ends_with("curr2_input") && found == "n/a"),
        "{e}"
    );
    assert!(e.to_string().contains("curr2_input"), "{e}");
    assert!(e.to_string().contains("expected an integer"), "{e}");

    // A file that disappears after discovery.
    std::fs::write(hw.join("curr2_input"), "482\n").unwrap();
    let mut s = JetsonSensor::open(&root).unwrap();
    std::fs::remove_file(hw.join("in1_input")).unwrap();
    let e = s.read().unwrap_err();
    assert!(
        matches!(&e, SensorError::Missing { path } if path.ends_with("in1_input")),
        "{e}"
    );
    assert!(e.to_string().ends_with("in1_input: not found"), "{e}");

    // A GPU load out of range.
    let load = root.join("sys/devices/platform/gpu.0/load");
    std::fs::write(&load, "1500\n").unwrap();
    let e = jetson::read_gpu_load(&load).unwrap_err();
    assert!(e.to_string().contains("per mille"), "{e}");
    std::fs::write(&load, "").unwrap();
    assert!(matches!(
        jetson::read_gpu_load(&load),
        Err(SensorError::Parse { .. })
    ));
    assert!(matches!(
        jetson::read_number(&root.join("nope")),
        Err(SensorError::Missing { .. })
    ));
}

#[test]
fn a_failing_rail_holds_the_last_power_and_keeps_the_label() {
    let scratch = scratch_copy("jetson-orin-nano-hwmon", "hold");
    let root = scratch.path().to_path_buf();
    let (mut set, _) = select_sensors_with(no_nvml, &options(root.clone(), false));
    let first = set.read(&system(), 1.0);
    assert_eq!(first.energy_source, EnergySource::Ina3221);
    std::fs::write(
        root.join("sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/curr1_input"),
        "garbage",
    )
    .unwrap();
    let held = set.read(&system(), 1.0);
    assert_eq!(held.energy_source, EnergySource::Ina3221);
    assert_eq!(held.power_w, first.power_w);
    assert!(close(held.energy_j, 2.0 * first.power_w as f64));
}

// ---------------------------------------------------------------- fallback order

#[test]
fn no_nvml_and_no_jetson_falls_back_to_the_model() {
    let (mut set, report) = select_sensors_with(no_nvml, &options(fixture("not-a-jetson"), false));
    assert_eq!(report.chosen, SensorKind::Model);
    assert_eq!(report.energy_source, EnergySource::Model);
    let names: Vec<&str> = report.attempts.iter().map(|a| a.sensor).collect();
    assert_eq!(
        names,
        ["nvml", "jetson", "rapl", "model"],
        "tried in this order"
    );
    assert!(report.attempts[0]
        .outcome
        .as_ref()
        .unwrap_err()
        .contains("libnvidia-ml"));
    assert!(report.attempts[1]
        .outcome
        .as_ref()
        .unwrap_err()
        .contains("not a Jetson"));
    let tick = set.read(&system(), 2.0);
    assert_eq!(tick.energy_source, EnergySource::Model);
    assert_eq!(tick.gpu_util, None);
    assert_eq!(tick.vram_total_bytes, None);
    // idle 10 + 0.5 × (60 − 10) = 35 W for 2 s
    assert_eq!(tick.power_w, 35.0);
    assert!(close(tick.energy_j, 70.0));
    assert!(report.to_string().contains("not used"));
}

#[test]
fn a_missing_sysfs_root_is_not_a_jetson() {
    let report = probe_sensors("/nonexistent/slim-root");
    // This machine may have NVML; either way the Jetson step must say why it was not used.
    let jetson = report
        .attempts
        .iter()
        .find(|a| a.sensor == "jetson")
        .unwrap();
    assert!(jetson.outcome.is_err());
}

#[test]
fn nvml_comes_before_jetson() {
    let (set, report) = select_sensors_with(
        || Ok(Box::new(h200_idle()) as Box<dyn NvmlSource>),
        &options(fixture("jetson-new-hwmon"), true),
    );
    assert_eq!(report.chosen, SensorKind::Nvml);
    assert_eq!(set.name(), "nvml");
    assert!(report.attempts[1]
        .outcome
        .as_ref()
        .unwrap_err()
        .contains("NVML was chosen"));
}

#[test]
fn an_nvml_without_power_gives_way_to_jetson_rails() {
    let mut no_power = h200_idle();
    no_power.name = "Orin (nvgpu)".into();
    no_power.power_mw = None;
    no_power.total_energy_mj = None;
    let (_, report) = select_sensors_with(
        move || Ok(Box::new(no_power) as Box<dyn NvmlSource>),
        &options(fixture("jetson-new-hwmon"), true),
    );
    assert_eq!(report.chosen, SensorKind::Jetson);
    assert_eq!(report.energy_source, EnergySource::Ina3221);
}

#[test]
fn nvml_power_is_not_used_for_batches_that_run_on_the_cpu() {
    let (mut set, report) = select_sensors_with(
        || Ok(Box::new(h200_idle()) as Box<dyn NvmlSource>),
        &options(fixture("not-a-jetson"), false),
    );
    assert_eq!(report.chosen, SensorKind::Nvml);
    assert_eq!(report.energy_source, EnergySource::Model);
    assert!(report.energy_reason.contains("GPU only"));
    let tick = set.read(&system(), 1.0);
    assert_eq!(tick.energy_source, EnergySource::Model);
    assert!(
        tick.vram_total_bytes.is_some(),
        "GPU figures still come from NVML"
    );
}

// ---------------------------------------------------------------- NVML, recorded readings

#[derive(serde::Deserialize)]
struct Recording {
    interval_ms: u64,
    reading: Vec<RecordedNvml>,
}

fn recording(name: &str) -> Recording {
    let text = std::fs::read_to_string(fixture("nvml").join(name)).unwrap();
    toml::from_str(&text).unwrap()
}

fn h200_idle() -> RecordedNvml {
    recording("h200.toml").reading[0].clone()
}

/// Replays a recording; the test moves to the next reading.
struct Replay {
    readings: Vec<RecordedNvml>,
    at: Arc<AtomicUsize>,
}

impl Replay {
    fn now(&self) -> &RecordedNvml {
        &self.readings[self.at.load(Ordering::SeqCst).min(self.readings.len() - 1)]
    }
}

impl NvmlSource for Replay {
    fn name(&self) -> Result<String, SensorError> {
        self.now().name()
    }
    fn utilization(&self) -> Result<u32, SensorError> {
        self.now().utilization()
    }
    fn memory(&self) -> Result<(u64, u64), SensorError> {
        self.now().memory()
    }
    fn power_mw(&self) -> Result<u32, SensorError> {
        self.now().power_mw()
    }
    fn total_energy_mj(&self) -> Result<u64, SensorError> {
        self.now().total_energy_mj()
    }
}

#[test]
fn nvml_reading_maps_units_and_describes_the_gpu() {
    let rec = h200_idle();
    let mut s = NvmlSensor::new(Box::new(rec.clone())).unwrap();
    let r = s.read().unwrap();
    let (used, total) = rec.memory.unwrap();
    assert_eq!(r.vram_used_bytes, Some(used));
    assert_eq!(r.vram_total_bytes, Some(total));
    assert_eq!(r.gpu_util, Some(rec.utilization.unwrap() as f32 / 100.0));
    assert!(close(
        r.power_w.unwrap() as f64,
        rec.power_mw.unwrap() as f64 / 1000.0
    ));
    assert_eq!(r.energy_counter_mj, rec.total_energy_mj);
    let mut d = DeviceInfo::default();
    s.describe(&mut d);
    assert_eq!(d.kind, "gpu");
    assert_eq!(d.gpu.as_deref(), Some(rec.name.as_str()));
    assert_eq!(d.vram_bytes, Some(total));
}

#[test]
fn nvml_energy_is_the_counter_difference_when_the_gpu_keeps_one() {
    let rec = recording("h200.toml");
    let at = Arc::new(AtomicUsize::new(0));
    let replay = Replay {
        readings: rec.reading.clone(),
        at: at.clone(),
    };
    let (mut set, report) = select_sensors_with(
        move || Ok(Box::new(replay) as Box<dyn NvmlSource>),
        &options(fixture("not-a-jetson"), true),
    );
    assert_eq!(report.energy_source, EnergySource::Nvml);
    assert!(report.energy_reason.contains("counter"));
    let dt = rec.interval_ms as f64 / 1000.0;
    let mut last = None;
    for i in 1..rec.reading.len() {
        at.store(i, Ordering::SeqCst);
        let tick = set.read(&system(), dt);
        assert_eq!(tick.energy_source, EnergySource::Nvml);
        assert_eq!(
            tick.power_w,
            rec.reading[i].power_mw.unwrap() as f32 / 1000.0
        );
        last = Some(tick);
    }
    let first_mj = rec.reading[0].total_energy_mj.unwrap();
    let last_mj = rec.reading.last().unwrap().total_energy_mj.unwrap();
    assert!(close(
        last.unwrap().energy_j,
        (last_mj - first_mj) as f64 / 1000.0
    ));
}

#[test]
fn nvml_without_an_energy_counter_integrates_power() {
    let mut readings = recording("h200.toml").reading;
    for r in &mut readings {
        r.total_energy_mj = None; // as a pre-Volta GPU answers
    }
    let at = Arc::new(AtomicUsize::new(0));
    let replay = Replay {
        readings: readings.clone(),
        at: at.clone(),
    };
    let (mut set, report) = select_sensors_with(
        move || Ok(Box::new(replay) as Box<dyn NvmlSource>),
        &options(fixture("not-a-jetson"), true),
    );
    assert!(report.energy_reason.contains("integrated"));
    assert!(report.warnings.iter().any(|w| w.contains("total energy")));
    let mut expected = 0.0;
    for i in 1..readings.len() {
        at.store(i, Ordering::SeqCst);
        let p0 = readings[i - 1].power_mw.unwrap() as f64 / 1000.0;
        let p1 = readings[i].power_mw.unwrap() as f64 / 1000.0;
        expected += (p0 + p1) / 2.0 * 0.5;
        let tick = set.read(&system(), 0.5);
        assert!(
            close(tick.energy_j, expected),
            "{} vs {expected}",
            tick.energy_j
        );
    }
}

#[test]
fn an_nvml_counter_that_goes_back_is_rebased() {
    let first = SensorReading {
        power_w: Some(100.0),
        energy_counter_mj: Some(5_000_000),
        ..SensorReading::default()
    };
    let mut m = EnergyMeter::measured(EnergySource::Nvml, &first, 50.0, 300.0, 8);
    let reset = SensorReading {
        power_w: Some(100.0),
        energy_counter_mj: Some(10),
        ..SensorReading::default()
    };
    m.record(Some(&reset), 1.0);
    assert!(close(m.total_j(), 100.0), "integrated across the reset");
    let next = SensorReading {
        power_w: Some(100.0),
        energy_counter_mj: Some(200_010),
        ..SensorReading::default()
    };
    m.record(Some(&next), 2.0);
    assert!(close(m.total_j(), 300.0), "counter again after the reset");
}

// ---------------------------------------------------------------- per-batch energy

#[test]
fn with_a_sensor_a_lone_batch_gets_measured_power_times_its_time() {
    let first = SensorReading {
        power_w: Some(40.0),
        ..SensorReading::default()
    };
    let mut m = EnergyMeter::measured(EnergySource::Ina3221, &first, 5.0, 20.0, 4);
    // A 1 s window from 40 W to 60 W averages 50 W.
    m.record(
        Some(&SensorReading {
            power_w: Some(60.0),
            ..SensorReading::default()
        }),
        1.0,
    );
    assert!(close(m.attributed_power_w() as f64, 50.0));
    let scheduler_copy = m.clone();
    let b = scheduler_copy.batch_energy(0.2, 1);
    assert!(close(b.joules as f64, 10.0));
    assert_eq!(b.source, EnergySource::Ina3221);
    assert_eq!(scheduler_copy.source, EnergySource::Ina3221);
}

#[test]
fn overlapping_batches_split_the_measured_power() {
    let first = SensorReading {
        power_w: Some(100.0),
        ..SensorReading::default()
    };
    let mut m = BatchAttribution::new(&EnergyMeter::measured(
        EnergySource::Nvml,
        &first,
        50.0,
        300.0,
        8,
    ));
    let t0 = Instant::now();
    let s = Duration::from_secs;
    // A runs 0..4 s, B runs 2..6 s: A = 2×100 + 2×50 = 300 J, B = 2×50 + 2×100 = 300 J.
    let a = m.begin_batch_at(t0);
    let b = m.begin_batch_at(t0 + s(2));
    let ea = m.finish_batch_at(a, t0 + s(4), 4.0, 1);
    let eb = m.finish_batch_at(b, t0 + s(6), 4.0, 1);
    assert!(close(ea.joules as f64, 300.0), "{ea:?}");
    assert!(close(eb.joules as f64, 300.0), "{eb:?}");
    assert!(
        close((ea.joules + eb.joules) as f64, 600.0),
        "sum = measured energy of the busy time"
    );
    assert_eq!(ea.source, EnergySource::Nvml);
}

#[test]
fn the_model_keeps_its_rule_and_label_for_batches() {
    let mut m = BatchAttribution::new(&EnergyMeter::model(10.0, 40.0, 4));
    let t = m.begin_batch();
    let e = m.finish_batch(t, 2.0, 1);
    assert!(close(e.joules as f64, 20.0));
    assert_eq!(e.source, EnergySource::Model);
}

// ---------------------------------------------------------------- RAPL, fake powercap trees

/// Where a RAPL counter wraps on current Intel parts, microjoules.
const RAPL_RANGE_UJ: u64 = 262_143_328_850;

/// A powercap tree as an x86 server shows it: two packages (with `core` and `dram` sub-zones),
/// the `intel-rapl-mmio` duplicate of package 0, a `psys` zone and the control-type folder.
fn rapl_tree() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("slim-sensors-rapl-")
        .tempdir()
        .unwrap();
    let class = dir.path().join("sys/class/powercap");
    let zone = |name: &str, label: &str, uj: u64| {
        let z = class.join(name);
        std::fs::create_dir_all(&z).unwrap();
        std::fs::write(z.join("name"), format!("{label}\n")).unwrap();
        std::fs::write(z.join("energy_uj"), format!("{uj}\n")).unwrap();
        std::fs::write(z.join("max_energy_range_uj"), format!("{RAPL_RANGE_UJ}\n")).unwrap();
    };
    std::fs::create_dir_all(class.join("intel-rapl")).unwrap();
    zone("intel-rapl:0", "package-0", 1_000_000);
    zone("intel-rapl:0:0", "core", 500_000);
    zone("intel-rapl:0:1", "dram", 900_000_000);
    zone("intel-rapl:1", "package-1", 2_000_000);
    zone("intel-rapl-mmio:0", "package-0", 1_000_000);
    zone("intel-rapl:2", "psys", 700_000_000);
    dir
}

fn set_rapl(root: &Path, zone: &str, uj: u64) {
    std::fs::write(
        root.join("sys/class/powercap").join(zone).join("energy_uj"),
        format!("{uj}\n"),
    )
    .unwrap();
}

#[test]
fn rapl_sums_the_package_domains_only() {
    let tree = rapl_tree();
    let domains = rapl::discover_packages(tree.path());
    let names: Vec<&str> = domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["package-0", "package-1"]);
    assert!(domains[0].dir.ends_with("intel-rapl:0"));
    assert_eq!(domains[1].max_energy_range_uj, Some(RAPL_RANGE_UJ));

    let t0 = Instant::now();
    let mut s = RaplSensor::open_at(tree.path(), t0).unwrap();
    assert!(
        s.summary().contains("package-0 + package-1"),
        "{}",
        s.summary()
    );
    let first = s.read_at(t0).unwrap();
    assert_eq!(first.energy_counter_mj, Some(0), "zero at opening");
    assert_eq!(first.power_w, None, "no time has passed: no power yet");

    // 5 J on package 0, 3 J on package 1; sub-zones, mmio and psys move too but are not read.
    set_rapl(tree.path(), "intel-rapl:0", 6_000_000);
    set_rapl(tree.path(), "intel-rapl:1", 5_000_000);
    set_rapl(tree.path(), "intel-rapl:0:1", 990_000_000);
    set_rapl(tree.path(), "intel-rapl:2", 900_000_000);
    set_rapl(tree.path(), "intel-rapl-mmio:0", 6_000_000);
    let r = s.read_at(t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(r.energy_counter_mj, Some(8_000));
    assert!(close(r.power_w.unwrap() as f64, 4.0), "8 J over 2 s: {r:?}");
    assert_eq!(r.gpu_util, None);
    assert_eq!(r.vram_total_bytes, None);
    assert_eq!(s.source(), EnergySource::Rapl);
    assert!(s.covers_cpu());
}

#[test]
fn a_rapl_counter_that_wraps_is_unwrapped() {
    let tree = rapl_tree();
    set_rapl(tree.path(), "intel-rapl:0", RAPL_RANGE_UJ - 2_000_000);
    let t0 = Instant::now();
    let mut s = RaplSensor::open_at(tree.path(), t0).unwrap();
    // Package 0 runs 2 J to the end of its range and 3 J past 0; package 1 adds 1 J.
    set_rapl(tree.path(), "intel-rapl:0", 3_000_000);
    set_rapl(tree.path(), "intel-rapl:1", 3_000_000);
    let r = s.read_at(t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(s.wraps(), 1);
    assert_eq!(s.total_uj(), 6_000_000);
    assert_eq!(r.energy_counter_mj, Some(6_000));
    assert!(close(r.power_w.unwrap() as f64, 6.0), "{r:?}");
    // And on from there without a wrap.
    set_rapl(tree.path(), "intel-rapl:0", 4_000_000);
    let r = s.read_at(t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(s.wraps(), 1);
    assert_eq!(r.energy_counter_mj, Some(7_000));

    // The meter, fed the unwrapped counter, never sees the wrap.
    let mut m = EnergyMeter::measured(EnergySource::Rapl, &Default::default(), 10.0, 60.0, 4);
    m.record(
        Some(&SensorReading {
            energy_counter_mj: Some(0),
            ..Default::default()
        }),
        0.0,
    );
    m.record(Some(&r), 2.0);
    assert!(close(m.total_j(), 7.0), "{}", m.total_j());
}

#[test]
fn bad_or_unreadable_rapl_counters_give_clear_errors() {
    let tree = rapl_tree();
    let counter = tree
        .path()
        .join("sys/class/powercap/intel-rapl:1/energy_uj");

    std::fs::write(&counter, "n/a\n").unwrap();
    let e = RaplSensor::open(tree.path()).unwrap_err();
    assert!(
        matches!(&e, SensorError::Parse { path, found, .. } if path.ends_with("intel-rapl:1/energy_uj") && found == "n/a"),
        "{e}"
    );

    // Readable at opening, gone later: the read fails and changes nothing.
    std::fs::write(&counter, "2000000\n").unwrap();
    let t0 = Instant::now();
    let mut s = RaplSensor::open_at(tree.path(), t0).unwrap();
    std::fs::remove_file(&counter).unwrap();
    let e = s.read_at(t0 + Duration::from_secs(1)).unwrap_err();
    assert!(e.to_string().ends_with("energy_uj: not found"), "{e}");
    std::fs::write(&counter, "3000000\n").unwrap();
    let r = s.read_at(t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(
        r.energy_counter_mj,
        Some(1_000),
        "the failed second is in the next reading"
    );

    // Root-only counters (Linux >= 5.10). Root reads them anyway, so this part only runs as
    // another user; rapl.rs unit-tests the message itself.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&counter, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&counter).is_err() {
        let e = RaplSensor::open(tree.path()).unwrap_err();
        assert!(e.to_string().contains("root only"), "{e}");
    }
    std::fs::set_permissions(&counter, std::fs::Permissions::from_mode(0o644)).unwrap();

    // Not a counter at all (a folder): an I/O error, whoever runs the test.
    std::fs::remove_file(&counter).unwrap();
    std::fs::create_dir(&counter).unwrap();
    let e = RaplSensor::open(tree.path()).unwrap_err();
    assert!(matches!(&e, SensorError::Io { .. }), "{e}");
}

#[test]
fn no_powercap_or_no_package_is_no_rapl() {
    let e = RaplSensor::open(&fixture("not-a-jetson")).unwrap_err();
    assert!(e.to_string().contains("no RAPL"), "{e}");
    let tree = rapl_tree();
    for zone in ["intel-rapl:0", "intel-rapl:1"] {
        std::fs::remove_dir_all(tree.path().join("sys/class/powercap").join(zone)).unwrap();
    }
    let e = RaplSensor::open(tree.path()).unwrap_err();
    assert!(e.to_string().contains("no package domain"), "{e}");
}

#[test]
fn rapl_is_the_measured_source_on_a_cpu_box() {
    let tree = rapl_tree();
    let (mut set, report) = select_sensors_with(no_nvml, &options(tree.path().into(), false));
    assert_eq!(report.chosen, SensorKind::Rapl);
    assert_eq!(report.energy_source, EnergySource::Rapl);
    assert!(
        report.energy_reason.contains("rapl energy counter"),
        "{report}"
    );
    let names: Vec<&str> = report.attempts.iter().map(|a| a.sensor).collect();
    assert_eq!(names, ["nvml", "jetson", "rapl", "model"]);
    assert!(report.attempts[2].outcome.is_ok());
    assert_eq!(set.name(), "rapl");
    assert_eq!(set.energy_sensor_name(), "rapl");
    assert!(set.energy.is_measured());

    set_rapl(tree.path(), "intel-rapl:0", 11_000_000);
    set_rapl(tree.path(), "intel-rapl:1", 7_000_000);
    let tick = set.read(&system(), 1.0);
    assert_eq!(tick.energy_source, EnergySource::Rapl);
    assert!(close(tick.energy_j, 15.0), "the counters' 15 J: {tick:?}");
    assert_eq!(tick.gpu_util, None);

    // A failed read holds the last power, still labelled measured.
    std::fs::write(
        tree.path()
            .join("sys/class/powercap/intel-rapl:1/energy_uj"),
        "garbage",
    )
    .unwrap();
    let held = set.read(&system(), 1.0);
    assert_eq!(held.energy_source, EnergySource::Rapl);
    assert_eq!(held.power_w, tick.power_w);

    // The device facts are left alone: RAPL knows no GPU.
    let device = set.describe(DeviceInfo {
        kind: "cpu".into(),
        ..DeviceInfo::default()
    });
    assert_eq!(device.kind, "cpu");
    assert_eq!(device.gpu, None);
}

#[test]
fn rapl_measures_cpu_batches_beside_an_nvml_gpu() {
    let tree = rapl_tree();
    let (mut set, report) = select_sensors_with(
        || Ok(Box::new(h200_idle()) as Box<dyn NvmlSource>),
        &options(tree.path().into(), false),
    );
    assert_eq!(report.chosen, SensorKind::Nvml, "GPU figures from NVML");
    assert_eq!(report.energy_source, EnergySource::Rapl, "{report}");
    assert!(report.energy_reason.contains("nvml"), "{report}");
    assert_eq!(set.name(), "nvml");
    assert_eq!(set.energy_sensor_name(), "rapl");
    set_rapl(tree.path(), "intel-rapl:0", 3_000_000);
    let tick = set.read(&system(), 1.0);
    assert_eq!(tick.energy_source, EnergySource::Rapl);
    assert!(close(tick.energy_j, 2.0), "{tick:?}");
    assert!(tick.vram_total_bytes.is_some(), "VRAM still from NVML");
}

#[test]
fn nvml_keeps_gpu_batches_and_rapl_is_not_tried() {
    let tree = rapl_tree();
    let (set, report) = select_sensors_with(
        || Ok(Box::new(h200_idle()) as Box<dyn NvmlSource>),
        &options(tree.path().into(), true),
    );
    assert_eq!(report.energy_source, EnergySource::Nvml);
    let rapl = report.attempts.iter().find(|a| a.sensor == "rapl").unwrap();
    assert!(rapl
        .outcome
        .as_ref()
        .unwrap_err()
        .contains("nvml measures the batches"));
    assert_eq!(set.energy_sensor_name(), "nvml");
}

#[test]
fn rapl_does_not_stand_in_for_a_gpu_that_reads_no_power() {
    let tree = rapl_tree();
    let mut no_power = h200_idle();
    no_power.power_mw = None;
    no_power.total_energy_mj = None;
    let (_, report) = select_sensors_with(
        move || Ok(Box::new(no_power) as Box<dyn NvmlSource>),
        &options(tree.path().into(), true),
    );
    assert_eq!(report.chosen, SensorKind::Nvml);
    assert_eq!(report.energy_source, EnergySource::Model);
    let rapl = report.attempts.iter().find(|a| a.sensor == "rapl").unwrap();
    assert!(
        rapl.outcome.as_ref().unwrap_err().contains("GPU"),
        "{report}"
    );
}

#[test]
fn unreadable_rapl_counters_fall_back_to_the_model_with_a_warning() {
    let tree = rapl_tree();
    let counter = tree
        .path()
        .join("sys/class/powercap/intel-rapl:0/energy_uj");
    std::fs::remove_file(&counter).unwrap();
    std::fs::create_dir(&counter).unwrap();
    let (set, report) = select_sensors_with(no_nvml, &options(tree.path().into(), false));
    assert_eq!(report.chosen, SensorKind::Model);
    assert_eq!(report.energy_source, EnergySource::Model);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("rapl: package counters found but unreadable")),
        "{report}"
    );
    assert_eq!(set.energy_sensor_name(), "model");
}

#[test]
fn the_modelled_total_counts_idle_power_over_wall_time() {
    // No sensor: an agent idle for 3 ticks of 2 s accrues the model's 10 W idle power.
    let (mut set, report) = select_sensors_with(no_nvml, &options(fixture("not-a-jetson"), false));
    assert_eq!(report.energy_source, EnergySource::Model);
    let idle = SystemReading {
        cpu_util: 0.0,
        ..system()
    };
    let mut tick = set.read(&idle, 2.0);
    for _ in 0..2 {
        tick = set.read(&idle, 2.0);
    }
    assert_eq!(tick.power_w, 10.0);
    assert!(close(tick.energy_j, 60.0), "{tick:?}");
    assert_eq!(tick.energy_source, EnergySource::Model, "labelled modelled");
}

// ---------------------------------------------------------------- real hardware

/// Run on a machine with an NVIDIA GPU and driver:
/// `cargo test -p slim-agent --test sensors -- --ignored --nocapture nvml_reads_this_machines_gpu`
#[test]
#[ignore = "needs an NVIDIA GPU and driver"]
fn nvml_reads_this_machines_gpu() {
    let report = probe_sensors("/");
    println!("{report}");
    assert_eq!(report.chosen, SensorKind::Nvml, "{report}");
    assert_eq!(report.energy_source, EnergySource::Nvml);
    let r = report.first_reading.unwrap();
    assert!(r.power_w.unwrap() > 0.0);
    assert!(r.vram_total_bytes.unwrap() > 0);
}
