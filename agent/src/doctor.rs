//! `slim-agent doctor`: checks an installation and says, one line per check, `OK` or what to fix.
//!
//! It looks at the hardware (Jetson, NVIDIA GPU, CPU only), whether the CUDA runtime and NVML
//! load, which power sensors are readable, which model families load with which widths, and
//! whether the broker accepts the configured credentials over the configured transport (TLS or
//! not). The broker and the models are required: [`DoctorReport::passed`] is false when either
//! fails, and the command exits non-zero.

use std::{fmt, path::Path, time::Duration};

use rumqttc::{ConnectReturnCode, ConnectionError, Event, Packet};

use crate::{
    backend::{select_backend, BackendChoice},
    telemetry::{probe_sensors, SensorAttempt, SensorKind, SensorReport},
    AgentConfig,
};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// Not working, but the agent runs without it (it says what it falls back to).
    Warn,
    /// The agent cannot serve until this is fixed.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name: `hardware`, `cuda`, `nvml`, `sensors`, `backend`, `models`, `broker`, `config`.
    pub name: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found, and for `WARN`/`FAIL` what to do about it.
    pub detail: String,
}

/// Every check, in order.
#[derive(Debug, Clone, Default)]
pub struct DoctorReport {
    /// The checks.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// False when a required check (broker, models, an explicitly requested backend) failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The first check called `name`.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    fn push(&mut self, name: &'static str, status: Status, detail: impl Into<String>) {
        self.checks.push(Check {
            name,
            status,
            detail: detail.into(),
        });
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(f, "{} {:<8} {}", c.status, c.name, c.detail)?;
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        if failed == 0 {
            writeln!(f, "doctor: all required checks passed")
        } else {
            writeln!(f, "doctor: {failed} required check(s) failed")
        }
    }
}

/// What to probe. `root` is `/` on a real device (a fixture tree in tests).
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Root for `/etc/nv_tegra_release`, `/proc/driver/nvidia` and the sysfs sensors.
    pub root: std::path::PathBuf,
    /// How long to wait for the broker's ConnAck.
    pub broker_timeout: Duration,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            root: "/".into(),
            broker_timeout: Duration::from_secs(5),
        }
    }
}

/// Runs every check for `config`, in the order the report lists them.
pub async fn run(config: &AgentConfig, options: &DoctorOptions) -> DoctorReport {
    let mut report = DoctorReport::default();
    check_config(config, &mut report);
    let sensors = probe_sensors(&options.root);
    let nvml = sensors.attempts.iter().find(|a| a.sensor == "nvml");
    check_hardware(
        &options.root,
        nvml.and_then(|a| a.outcome.as_ref().ok()),
        &mut report,
    );
    check_cuda(config, &mut report);
    check_nvml(nvml, &mut report);
    check_sensors(&sensors, &mut report);
    check_models(config, &mut report);
    check_broker(config, options.broker_timeout, &mut report).await;
    report
}

/// CUDA: always probed, so the line says whether this build and this machine could use it (a
/// failure only when the configured backend is CUDA).
fn check_cuda(config: &AgentConfig, report: &mut DoctorReport) {
    let required = config.backend == BackendChoice::Cuda;
    match select_backend(BackendChoice::Cuda) {
        Ok(_) => report.push("cuda", Status::Ok, "tract CUDA runtime loads"),
        Err(reason) => {
            let reason = reason.trim_start_matches("--backend cuda, but CUDA is unusable: ");
            let fix = if reason.contains("no `cuda` feature") {
                "rebuild with --features cuda-12060 (JetPack 6, CUDA 12.x) or cuda-13000 (CUDA 13) to use the GPU"
            } else {
                "install the CUDA runtime matching the build's cuda-* feature (libcudart, libcublas) and check the driver"
            };
            let status = if required { Status::Fail } else { Status::Warn };
            let fallback = if required {
                "backend = \"cuda\" is configured, so the agent will not start"
            } else {
                "the agent runs on the CPU"
            };
            report.push(
                "cuda",
                status,
                format!("CUDA unusable: {reason}; {fallback}; fix: {fix}"),
            );
        }
    }
}

/// Whether NVML loads, from the sensor probe's NVML attempt (none without the `nvml` feature).
fn check_nvml(nvml: Option<&SensorAttempt>, report: &mut DoctorReport) {
    match nvml.map(|a| &a.outcome) {
        Some(Ok(found)) => report.push("nvml", Status::Ok, format!("NVML loads: {found}")),
        Some(Err(why)) => report.push(
            "nvml",
            Status::Warn,
            format!("NVML not used: {why} (fine on Jetson and CPU boxes; on a desktop GPU install the NVIDIA driver's libnvidia-ml.so.1)"),
        ),
        None => report.push("nvml", Status::Warn, "NVML not probed (built without the `nvml` feature)"),
    }
}

/// The chosen power sensor, where energy figures come from and every readable sensor; a
/// warning when energy is only modelled.
fn check_sensors(sensors: &SensorReport, report: &mut DoctorReport) {
    let readable: Vec<String> = sensors
        .attempts
        .iter()
        .filter_map(|a| {
            a.outcome
                .as_ref()
                .ok()
                .map(|f| format!("{}: {f}", a.sensor))
        })
        .collect();
    let sensor_status = if sensors.chosen == SensorKind::Model {
        Status::Warn
    } else {
        Status::Ok
    };
    let mut detail = format!(
        "chosen {:?}, energy from {:?} ({}); readable: {}",
        sensors.chosen,
        sensors.energy_source,
        sensors.energy_reason,
        if readable.is_empty() {
            "none".to_string()
        } else {
            readable.join("; ")
        }
    );
    if sensor_status == Status::Warn {
        detail.push_str(
            "; energy figures are estimates: set [energy] idle_power_w/max_power_w for this device",
        );
    }
    for w in &sensors.warnings {
        detail.push_str(&format!("; warning: {w}"));
    }
    report.push("sensors", sensor_status, detail);
}

fn check_config(config: &AgentConfig, report: &mut DoctorReport) {
    match config.validate() {
        Ok(()) => report.push(
            "config",
            Status::Ok,
            format!(
                "agent id {:?}, topic prefix {:?}, state_dir {}",
                config.id,
                config.topic_prefix,
                config
                    .state_dir
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "unset (outbox in memory only)".into())
            ),
        ),
        Err(e) => report.push("config", Status::Fail, format!("invalid: {e}")),
    }
    if let Some(user) = &config.broker.username {
        if user != &config.id {
            report.push(
                "config",
                Status::Warn,
                format!("MQTT username {user:?} differs from agent id {:?}: the shipped ACL (deploy/mosquitto/acl) only lets an agent publish under slim/v1/agents/<username>/; set id = username", config.id),
            );
        }
    }
}

fn check_hardware(root: &Path, nvml_found: Option<&String>, report: &mut DoctorReport) {
    let tegra = root.join("etc/nv_tegra_release");
    if let Ok(text) = std::fs::read_to_string(&tegra) {
        let first = text
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches('#')
            .trim();
        let model = std::fs::read_to_string(root.join("proc/device-tree/model"))
            .map(|m| m.trim_end_matches('\0').trim().to_string())
            .unwrap_or_else(|_| "unknown model".into());
        report.push(
            "hardware",
            Status::Ok,
            format!("NVIDIA Jetson ({model}), L4T {first}; unified memory: VRAM is RAM"),
        );
    } else if let Some(found) = nvml_found {
        report.push(
            "hardware",
            Status::Ok,
            format!("NVIDIA GPU via NVML: {found}"),
        );
    } else if let Ok(version) = std::fs::read_to_string(root.join("proc/driver/nvidia/version")) {
        report.push(
            "hardware",
            Status::Warn,
            format!(
                "NVIDIA driver loaded ({}) but NVML unreadable: install libnvidia-ml.so.1 matching the driver",
                version.lines().next().unwrap_or("").trim()
            ),
        );
    } else {
        report.push(
            "hardware",
            Status::Ok,
            format!(
                "CPU only ({} cores, {}): no /etc/nv_tegra_release, no NVIDIA driver",
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
                std::env::consts::ARCH
            ),
        );
    }
}

fn check_models(config: &AgentConfig, report: &mut DoctorReport) {
    let (backend, _) = match select_backend(config.backend) {
        Ok(b) => {
            report.push("backend", Status::Ok, format!("{} ({})", b.0.name, b.1));
            b
        }
        Err(e) => {
            report.push(
                "backend",
                Status::Fail,
                format!("{e}; fix: set backend = \"auto\" or \"cpu\", or make CUDA usable"),
            );
            report.push("models", Status::Fail, "not checked: no usable backend");
            return;
        }
    };
    match crate::service::load_families(config, backend.runtime) {
        Ok(families) if families.is_empty() => report.push(
            "models",
            Status::Fail,
            format!(
                "no model family in {}: copy a family folder (manifest.toml + ONNX files) there or set models_dir",
                config.models_dir.display()
            ),
        ),
        Ok(families) => {
            let mut names: Vec<&String> = families.keys().collect();
            names.sort();
            let list: Vec<String> = names
                .into_iter()
                .map(|name| {
                    let widths: Vec<String> = families[name]
                        .plans()
                        .iter()
                        .map(|p| format!("{}x", p.entry.width))
                        .collect();
                    format!("{name} [{}]", widths.join(" "))
                })
                .collect();
            report.push(
                "models",
                Status::Ok,
                format!("{} in {}", list.join(", "), config.models_dir.display()),
            );
        }
        Err(e) => report.push(
            "models",
            Status::Fail,
            format!(
                "cannot load models from {}: {e:#}; fix models_dir or the family files",
                config.models_dir.display()
            ),
        ),
    }
}

async fn check_broker(config: &AgentConfig, timeout: Duration, report: &mut DoctorReport) {
    let b = &config.broker;
    let tls =
        b.url.starts_with("mqtts://") || b.url.starts_with("ssl://") || b.url.starts_with("tls://");
    let who = match &b.username {
        Some(u) => format!("as {u:?}"),
        None => "anonymously".into(),
    };
    let transport = match (&b.ca_file, tls) {
        (Some(ca), true) => format!("TLS, CA {}", ca.display()),
        // No ca_file: rustls-native-certs loads the system's certificates (OpenSSL's
        // locations, or SSL_CERT_FILE/SSL_CERT_DIR).
        (None, true) => "TLS, the system's CA certificates".into(),
        (_, false) => "plain TCP, no TLS".into(),
    };
    let mut options = b.clone();
    options.clean_session = true;
    let (client, mut eventloop) = match options.connect(&format!("{}-doctor", config.id), None) {
        Ok(pair) => pair,
        Err(e) => {
            report.push("broker", Status::Fail, format!("{}: {e}", b.url));
            return;
        }
    };
    let outcome = tokio::time::timeout(timeout, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => {
            report.push(
                "broker",
                Status::Ok,
                format!("connected to {} {who} ({transport})", b.url),
            );
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
        }
        Ok(Err(e)) => {
            let fix = match &e {
                ConnectionError::ConnectionRefused(
                    ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
                ) => "check broker.username/password (SLIM_MQTT_USERNAME/SLIM_MQTT_PASSWORD) against the broker's password file",
                ConnectionError::ConnectionRefused(_) => "the broker refused the session: check the client id and protocol version",
                ConnectionError::Tls(_) => "check broker.ca_file (the CA that signed the broker certificate), that the URL host is in the certificate's names, and client_cert/client_key for mutual TLS",
                ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => "nothing listens there: start the broker, check the port (8883 for mqtts://, 1883 for mqtt://) and the firewall",
                ConnectionError::Io(_) if tls => "the connection failed during the TLS handshake or was closed: check that the port speaks TLS and broker.ca_file",
                _ => "check broker.url, the network path and the firewall",
            };
            report.push(
                "broker",
                Status::Fail,
                format!("cannot connect to {} {who} ({transport}): {e}; fix: {fix}", b.url),
            );
        }
        Err(_) => report.push(
            "broker",
            Status::Fail,
            format!(
                "no answer from {} within {timeout:?} ({transport}); fix: check the host, port, firewall, and that mqtts:// is used for a TLS port",
                b.url
            ),
        ),
    }
}
