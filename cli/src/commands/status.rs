//! `slim status`: the fleet table from the broker's retained agent status and live telemetry.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use clap::Args;
use slim_protocol::{decode, AgentInfo, AgentTopic, CoordinatorStatus, Telemetry};

/// Shows every agent: backend, status, utilization, memory, power, energy and queue.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub broker: super::BrokerArgs,
    /// Redraw the table every second until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Without --watch: how long to listen for telemetry before printing.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    pub wait: Duration,
}

/// An agent heard from after this long without telemetry is shown as `silent`: the
/// coordinator's default liveness timeout, after which it re-routes the agent's work.
const SILENT_AFTER: Duration = Duration::from_millis(slim_protocol::DEFAULT_TELEMETRY_TIMEOUT_MS);

/// What is known of one agent.
#[derive(Debug, Clone, Default)]
pub struct FleetRow {
    /// Its retained status.
    pub info: Option<AgentInfo>,
    /// Its latest telemetry.
    pub telemetry: Option<Telemetry>,
    /// How long ago the telemetry arrived.
    pub telemetry_age: Option<Duration>,
}

/// Connects, listens, prints the table (once, or every second with `--watch`).
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let topics = slim_protocol::Topics::new(&args.broker.topic_prefix);
    let filters = [
        topics.status_filter(),
        topics.telemetry_filter(),
        topics.coordinator_status_filter(),
    ];
    let url = args.broker.broker.clone();
    let client = args.broker.connect("slim-status").await.map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n  hint: `slim status` asks the broker given by --broker or SLIM_BROKER \
             ({url} here); `slim demo` runs its own broker on a random port and prints the \
             `slim status --broker URL` command to use"
        )
    })?;
    // Tap first, then subscribe, so the retained status messages land in the tap.
    let mut inbox = client.tap(&format!("{}/#", topics.prefix()));
    for filter in &filters {
        client.resubscribe(filter).await?;
    }

    let mut fleet: BTreeMap<String, (FleetRow, Option<Instant>)> = BTreeMap::new();
    let mut coordinators: BTreeMap<String, CoordinatorStatus> = BTreeMap::new();
    let started = Instant::now();
    let mut redraw = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            message = inbox.recv() => {
                let Some((topic, payload)) = message else { break };
                if let Some(id) = topics.parse_coordinator_status(&topic) {
                    match decode::<CoordinatorStatus>(&payload) {
                        Ok(status) if status.id == id => {
                            coordinators.insert(id, status);
                        }
                        _ => {}
                    }
                    continue;
                }
                match topics.parse_agent(&topic) {
                    Some(AgentTopic::Status(agent)) => {
                        if let Ok(info) = decode::<AgentInfo>(&payload) {
                            fleet.entry(agent).or_default().0.info = Some(info);
                        }
                    }
                    Some(AgentTopic::Telemetry(agent)) => {
                        if let Ok(t) = decode::<Telemetry>(&payload) {
                            let entry = fleet.entry(agent).or_default();
                            entry.0.telemetry = Some(t);
                            entry.1 = Some(Instant::now());
                        }
                    }
                    _ => {}
                }
            }
            _ = redraw.tick(), if args.watch => {
                print!("\x1b[2J\x1b[H{}", render(&fleet, &coordinators, &url, &topics));
                println!("(refreshing every second; Ctrl-C to stop)");
            }
            _ = tokio::time::sleep_until((started + args.wait).into()), if !args.watch => {
                print!("{}", render(&fleet, &coordinators, &url, &topics));
                break;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.disconnect().await;
    Ok(())
}

fn render(
    fleet: &BTreeMap<String, (FleetRow, Option<Instant>)>,
    coordinators: &BTreeMap<String, CoordinatorStatus>,
    broker: &str,
    topics: &slim_protocol::Topics,
) -> String {
    let now = Instant::now();
    let rows: Vec<(String, FleetRow)> = fleet
        .iter()
        .map(|(id, (row, at))| {
            let mut row = row.clone();
            row.telemetry_age = at.map(|at| now.saturating_duration_since(at));
            (id.clone(), row)
        })
        .collect();
    let header = coordinators_line(coordinators);
    let mut text = format!(
        "broker {broker} · prefix {} · {header}\n{}",
        topics.prefix(),
        fleet_table(&rows)
    );
    if rows.is_empty() {
        let _ = writeln!(
            text,
            "(no agents have announced themselves on {broker} under prefix {}; for `slim demo \
             --keep-running`, pass the broker URL it prints: slim status --broker URL)",
            topics.prefix()
        );
    }
    text
}

/// The coordinators, one per member of a group: `coordinator c1 (online, router greedy)`, or
/// `coordinators: c1 (online, router greedy), c2 (offline, …) · ready` where the group is ready
/// while any member is online.
fn coordinators_line(coordinators: &BTreeMap<String, CoordinatorStatus>) -> String {
    let member = |c: &CoordinatorStatus| {
        let state = if c.online { "online" } else { "offline" };
        format!("{} ({state}, router {})", c.id, c.router)
    };
    match coordinators.len() {
        0 => "no coordinator status".to_string(),
        1 => format!(
            "coordinator {}",
            coordinators.values().map(member).collect::<String>()
        ),
        _ => {
            let ready = coordinators.values().any(|c| c.online);
            let members: Vec<String> = coordinators.values().map(member).collect();
            let state = if ready {
                "ready"
            } else {
                "not ready: no member online"
            };
            format!("coordinators: {} · {state}", members.join(", "))
        }
    }
}

fn percent(fraction: Option<f32>) -> String {
    fraction.map_or("-".into(), |f| format!("{:.0}%", f * 100.0))
}

fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1u32 << 30))
}

/// The fleet table: one line per agent, in id order.
pub fn fleet_table(rows: &[(String, FleetRow)]) -> String {
    let header = [
        "AGENT",
        "BACKEND",
        "STATUS",
        "CPU",
        "GPU",
        "MEMORY GiB",
        "POWER W",
        "ENERGY J",
        "QUEUE",
        "OUTSTANDING",
        "ANSWERED",
        "ERRORS",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    lines.extend(rows.iter().map(|(id, row)| fleet_line(id, row)));
    // AGENT, BACKEND and STATUS are text; the figures after them are aligned right.
    super::columns::align_columns(&lines, 3)
}

/// One agent's cells, in the order of [`fleet_table`]'s header.
fn fleet_line(id: &str, row: &FleetRow) -> Vec<String> {
    let t = row.telemetry.as_ref();
    let figure = |f: &dyn Fn(&Telemetry) -> String| t.map_or("-".into(), f);
    vec![
        id.to_string(),
        backend(row.info.as_ref()),
        liveness(row).into(),
        percent(t.map(|t| t.cpu_util)),
        percent(t.and_then(|t| t.gpu_util)),
        figure(&memory),
        figure(&|t| format!("{:.1}", t.power_w)),
        figure(&|t| format!("{:.0}", t.energy_j)),
        figure(&|t| t.queues.iter().map(|q| q.depth).sum::<u32>().to_string()),
        figure(&|t| t.outstanding.to_string()),
        figure(&|t| t.completed.to_string()),
        figure(&|t| t.errors.to_string()),
    ]
}

/// `online`, `silent`, `offline` (from the retained status and the telemetry's age), or
/// `unknown` without a status.
fn liveness(row: &FleetRow) -> &'static str {
    match &row.info {
        Some(info) => {
            let since_heard = row.telemetry_age.unwrap_or_default();
            slim_protocol::Liveness::of(info.online, since_heard, SILENT_AFTER).as_str()
        }
        None => "unknown",
    }
}

/// The backend, with the emulated slowdown when there is one (`cpu x4`).
fn backend(info: Option<&AgentInfo>) -> String {
    match info {
        Some(info) => match &info.emulation {
            Some(e) if e.slowdown > 1.0 => format!("{} x{}", info.backend, e.slowdown),
            _ => info.backend.clone(),
        },
        None => "-".into(),
    }
}

/// Memory used of total, GiB: the GPU's when it reports VRAM, else the machine's RAM.
fn memory(t: &Telemetry) -> String {
    match (t.vram_used_bytes, t.vram_total_bytes) {
        (Some(used), Some(total)) => format!("{}/{} VRAM", gib(used), gib(total)),
        _ => format!("{}/{}", gib(t.ram_used_bytes), gib(t.ram_total_bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slim_protocol::{DeviceInfo, EnergySource, QueueStat, PROTOCOL_VERSION};

    fn info(online: bool) -> AgentInfo {
        AgentInfo {
            threads: 1,
            v: PROTOCOL_VERSION,
            agent: "a".into(),
            online,
            started_at_ms: 1,
            backend: "cuda".into(),
            backend_reason: String::new(),
            device: DeviceInfo::default(),
            models: vec![],
            max_batch: 8,
            emulation: None,
            profile: None,
            durable: false,
            max_queued: None,
            concurrency: None,
        }
    }

    fn telemetry() -> Telemetry {
        Telemetry {
            v: PROTOCOL_VERSION,
            agent: "a".into(),
            seq: 1,
            at_ms: 0,
            cpu_util: 0.5,
            ram_used_bytes: 1 << 30,
            ram_total_bytes: 4 << 30,
            gpu_util: Some(0.25),
            vram_used_bytes: Some(2 << 30),
            vram_total_bytes: Some(8 << 30),
            power_w: 12.5,
            energy_j: 99.0,
            energy_source: EnergySource::Nvml,
            queues: vec![QueueStat {
                model: "digits".into(),
                width: 0.5,
                depth: 3,
                oldest_wait_ms: 1.0,
                instances: 1,
            }],
            outstanding: 4,
            completed: 10,
            errors: 1,
            batches: vec![],
            done: vec![],
            refused: vec![],
            emulated: false,
            pace_misses: 0,
            more: false,
            unreported_dropped: 0,
        }
    }

    #[test]
    fn the_fleet_table_shows_status_utilization_memory_power_and_queue() {
        let rows = vec![
            (
                "a".to_string(),
                FleetRow {
                    info: Some(info(true)),
                    telemetry: Some(telemetry()),
                    telemetry_age: Some(Duration::from_millis(300)),
                },
            ),
            (
                "b".to_string(),
                FleetRow {
                    info: Some(info(false)),
                    telemetry: None,
                    telemetry_age: None,
                },
            ),
        ];
        let table = fleet_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("AGENT"));
        let a: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            a,
            [
                "a", "cuda", "online", "50%", "25%", "2.0/8.0", "VRAM", "12.5", "99", "3", "4",
                "10", "1"
            ]
        );
        assert!(lines[2].starts_with("b") && lines[2].contains("offline"));
    }

    #[test]
    fn a_group_is_ready_while_any_member_is_online() {
        let status = |id: &str, online: bool| CoordinatorStatus {
            v: slim_protocol::PROTOCOL_VERSION,
            id: id.into(),
            online,
            router: "greedy".into(),
            started_at_ms: 1,
        };
        let mut group = BTreeMap::new();
        group.insert("c1".to_string(), status("c1", false));
        assert_eq!(
            coordinators_line(&group),
            "coordinator c1 (offline, router greedy)"
        );
        group.insert("c2".to_string(), status("c2", true));
        assert_eq!(
            coordinators_line(&group),
            "coordinators: c1 (offline, router greedy), c2 (online, router greedy) · ready"
        );
        group.insert("c2".to_string(), status("c2", false));
        assert!(coordinators_line(&group).ends_with("not ready: no member online"));
    }

    #[test]
    fn the_table_names_the_broker_and_prefix_it_asked_even_when_empty() {
        let topics = slim_protocol::Topics::new("slim/v1");
        let text = render(
            &BTreeMap::new(),
            &BTreeMap::new(),
            "mqtt://127.0.0.1:1883",
            &topics,
        );
        assert!(
            text.starts_with("broker mqtt://127.0.0.1:1883 · prefix slim/v1"),
            "{text}"
        );
        assert!(
            text.contains("no agents have announced themselves on mqtt://127.0.0.1:1883"),
            "{text}"
        );
    }

    #[test]
    fn an_agent_without_recent_telemetry_is_shown_as_silent() {
        let rows = vec![(
            "a".to_string(),
            FleetRow {
                info: Some(info(true)),
                telemetry: Some(telemetry()),
                telemetry_age: Some(Duration::from_secs(30)),
            },
        )];
        assert!(fleet_table(&rows)
            .lines()
            .nth(1)
            .unwrap()
            .contains("silent"));
    }
}
