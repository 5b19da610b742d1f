//! Fleets for the generalisation check: a trained policy runs, without retraining, on fleets
//! larger or smaller than the one it was trained on, and on one with a device type it never saw.

use std::path::Path;

use crate::fleet::{DeviceSpec, Fleet};

/// `fleet` resized to `n` devices by cycling through its devices in order (2 of a 5-device fleet
/// are its first two; 12 are it twice and its first two again). Agent ids stay unique.
///
/// # Panics
/// When `fleet` has no device.
pub fn resized(fleet: &Fleet, n: usize) -> Fleet {
    assert!(!fleet.devices.is_empty(), "a fleet to resize has a device");
    let devices = (0..n)
        .map(|i| {
            let base = &fleet.devices[i % fleet.devices.len()];
            DeviceSpec {
                agent: format!("{}.{}", base.agent, i / fleet.devices.len()),
                ..base.clone()
            }
        })
        .collect();
    Fleet {
        devices,
        models: fleet.models.clone(),
        transport: fleet.transport.clone(),
        telemetry_interval_ms: fleet.telemetry_interval_ms,
    }
}

/// Profile names in `profiles_dir` (file stems of `*.toml`, sorted) that `seen` does not name.
pub fn unseen_profiles(profiles_dir: &Path, seen: &[String]) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(profiles_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|name| !seen.contains(name))
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::tests::tiny_fleet;

    #[test]
    fn resizing_cycles_the_devices_and_keeps_ids_unique() {
        let fleet = tiny_fleet();
        let k = fleet.devices.len();
        for n in [1, k, 2 * k + 1] {
            let r = resized(&fleet, n);
            assert_eq!(r.devices.len(), n);
            assert_eq!(r.models.len(), fleet.models.len());
            for (i, d) in r.devices.iter().enumerate() {
                assert_eq!(d.profile.name, fleet.devices[i % k].profile.name);
            }
            let mut ids: Vec<&str> = r.devices.iter().map(|d| d.agent.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), n, "agent ids repeat at n = {n}");
        }
    }

    #[test]
    fn unseen_profiles_are_the_shipped_ones_training_did_not_name() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        let seen = vec!["rtx-4090".to_string(), "cpu-2core".to_string()];
        let unseen = unseen_profiles(&dir, &seen).unwrap();
        assert!(unseen.contains(&"jetson-orin-nano".to_string()));
        assert!(!unseen.iter().any(|n| seen.contains(n)));
        assert!(unseen.windows(2).all(|w| w[0] < w[1]), "sorted: {unseen:?}");
    }
}
