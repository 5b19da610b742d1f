//! `slim bench --saturate`: the glue between the flags and [`crate::saturate`].

use std::fmt::Write as _;

use anyhow::Context;
use slim_client::samples::family_samples;
use slim_protocol::DeviceProfile;
use slim_router::RouterKind;

use super::bench::BenchArgs;
use crate::saturate::{self, SaturationSpec};

/// Runs the saturation cases and prints (and with --out writes) the table.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let sat = &args.saturate;
    let manifest = args.manifest()?;
    let profile: DeviceProfile =
        toml::from_str(&std::fs::read_to_string(&sat.profile).with_context(|| {
            format!("cannot read the device profile {}", sat.profile.display())
        })?)
        .with_context(|| format!("{} is not a device profile", sat.profile.display()))?;
    let wants_ppo = sat.routers.contains(&RouterKind::Ppo);
    anyhow::ensure!(
        sat.coordinators.iter().all(|&n| (1..=64).contains(&n)),
        "--coordinators takes counts from 1 to 64, got {:?}",
        sat.coordinators
    );
    anyhow::ensure!(
        !wants_ppo || sat.policy.is_file(),
        "the ppo router needs a checkpoint: {} does not exist (pass --policy FILE, or leave ppo out of --routers)",
        sat.policy.display()
    );
    let spec = SaturationSpec {
        broker_url: (!sat.embedded).then(|| args.broker.broker.clone()),
        messages: sat.messages,
        fleets: sat.fleets.clone(),
        routers: sat.routers.clone(),
        policy: wants_ppo.then(|| sat.policy.clone()),
        model: manifest.model_info(),
        profile: Some(profile),
        samples: family_samples(&args.models_dir, &args.model)?,
        topic_prefix: format!("{}/saturate", args.broker.topic_prefix),
    };
    let report = saturate::run_groups(&spec, &sat.coordinators).await?;
    let table = report.markdown();
    println!("{table}");
    if let Some(out) = &sat.out {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "Written by `slim bench --saturate` on {}, {}.\n",
            machine(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        md.push_str(&table);
        std::fs::write(out, md).with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// The CPU model and core count, for the table's heading.
pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "an unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu} ({cores} cores)")
}
