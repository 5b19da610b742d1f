//! The generalisation part of `slim eval`: every checkpoint against the best heuristic, without
//! retraining, on the evaluated fleet resized to other device counts, and on that fleet plus one
//! device of a type no checkpoint was trained on.

use std::path::Path;

use anyhow::Context;
use indicatif::ProgressBar;
use slim_router::eval::generalise::{resized, unseen_profiles};
use slim_router::fleet::Fleet;
use slim_router::reward::RewardPreset;

use super::sim::{self, SimPlan, SimResults};
use super::tables;

/// One fleet of the check and every router's runs on it.
pub struct Case {
    /// What the fleet is.
    pub label: String,
    /// Its device count.
    pub devices: usize,
    /// The runs, at the one load of the check.
    pub res: SimResults,
}

/// Settings of the check.
pub struct Plan<'a> {
    /// The evaluated fleet and its profile names.
    pub fleet: (&'a Fleet, &'a [String]),
    /// Where profiles and model manifests live.
    pub dirs: (&'a Path, &'a Path),
    /// Folder of checkpoints and the presets to load.
    pub policies: (&'a Path, &'a [RewardPreset]),
    /// Device counts to resize the fleet to.
    pub sizes: &'a [usize],
    /// Offered load, as a fraction of each fleet's capacity.
    pub load: f64,
    /// Seeds per run and requests per run.
    pub seeds: u64,
    /// Requests per run.
    pub requests: usize,
    /// Simulator threads.
    pub threads: usize,
}

/// The fleets of the check: the evaluated one resized to each size, then (when a shipped
/// profile was not in any checkpoint's training fleet) the evaluated one plus that device.
fn fleets(plan: &Plan<'_>, trained_on: &[String]) -> anyhow::Result<Vec<(String, Fleet)>> {
    let (fleet, names) = plan.fleet;
    let mut out: Vec<(String, Fleet)> = plan
        .sizes
        .iter()
        .map(|&n| (format!("evaluated fleet cycled to {n}"), resized(fleet, n)))
        .collect();
    let (profiles, models) = plan.dirs;
    let unseen = unseen_profiles(profiles, trained_on)
        .with_context(|| format!("listing {}", profiles.display()))?;
    if let Some(new) = unseen.first() {
        let mut with_new = names.to_vec();
        with_new.push(new.clone());
        let f = Fleet::load(profiles, models, &with_new)
            .with_context(|| format!("loading the fleet with {new}"))?;
        out.push((
            format!("evaluated fleet + 1 × `{new}` (a type no checkpoint was trained on)"),
            f,
        ));
    }
    Ok(out)
}

/// Runs the check: the heuristics that can keep up (random and round-robin never do on the
/// shipped fleets, so they are left out to save time) and every checkpoint, on each fleet. Each
/// checkpoint is loaded once and its routers reused on every fleet.
pub fn run(plan: &Plan<'_>, bar: &ProgressBar) -> anyhow::Result<Vec<Case>> {
    let (policies, presets) = plan.policies;
    let (entries, trained_on) = sim::with_checkpoints(policies, presets)?;
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|e| e.name != "random" && e.name != "round-robin")
        .collect();
    let mut cases = Vec::new();
    for (label, fleet) in fleets(plan, &trained_on)? {
        bar.set_message(format!("generalisation: {label}"));
        let sim_plan = SimPlan {
            fleet: &fleet,
            loads: vec![plan.load],
            seeds: plan.seeds,
            requests: plan.requests,
            presets: presets.to_vec(),
            threads: plan.threads,
            shifting: false,
        };
        let res = sim::run(&sim_plan, entries.clone(), bar);
        cases.push(Case {
            label,
            devices: fleet.devices.len(),
            res,
        });
    }
    Ok(cases)
}

/// Progress-bar steps of [`run`] for `routers` routers (all entries, random and round-robin
/// included) on `fleets` fleets.
pub fn steps(routers: usize, fleets: usize) -> u64 {
    (routers.saturating_sub(2) * fleets) as u64
}

/// One row per (fleet, checkpoint): the checkpoint against the heuristic of lowest mean preset
/// cost among those keeping up on that fleet, with the paired 95 % interval of the difference.
pub fn table(cases: &[Case]) -> String {
    let mut t = String::from("| fleet | devices | checkpoint | best heuristic keeping up | its cost | checkpoint's cost | checkpoint − heuristic [95 % CI] | verdict |\n|---|---|---|---|---|---|---|---|\n");
    for case in cases {
        let res = &case.res;
        for (i, e, _, p) in tables::ppo_entries(res) {
            let Some(v) = tables::versus(res, i, p)
                .into_iter()
                .find(|v| v.load.is_some())
            else {
                continue;
            };
            let lead = format!("{} | {} | {}", case.label, case.devices, e.name);
            tables::versus_row(&mut t, &lead, &v, "no heuristic keeps up");
        }
    }
    t
}

/// The report's section: what was run, then `table`.
pub fn section(plan: &Plan<'_>, table: &str) -> String {
    let sizes: Vec<String> = plan.sizes.iter().map(ToString::to_string).collect();
    format!(
        "## Simulator: generalisation without retraining\n\n\
         Each checkpoint, as shipped, on the evaluated fleet cycled to {} devices, and on the \
         evaluated fleet plus one device of a type no checkpoint's training fleet named \
         (checkpoint metadata `fleet`). Steady load {:.2} of each fleet's capacity, the same {} \
         evaluation seeds and {} requests per run as above; the best heuristic is chosen per \
         fleet among those keeping up on every seed (random and round-robin, which keep up on \
         none of the shipped fleets, are not run here).\n\n{table}\n",
        sizes.join(", "),
        plan.load,
        plan.seeds,
        plan.requests
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn every_checkpoint_is_compared_on_every_size_and_on_an_unseen_device_type() {
        let root = root();
        let (profiles, models) = (root.join("profiles"), root.join("models"));
        let names = Fleet::parse_names("jetson-orin-nano,rtx-4090");
        let fleet = Fleet::load(&profiles, &models, &names).unwrap();
        let presets = [RewardPreset::Efficiency];
        let policies = root.join("router/policies");
        let plan = Plan {
            fleet: (&fleet, &names),
            dirs: (&profiles, &models),
            policies: (&policies, &presets),
            sizes: &[1, 3],
            load: 0.2,
            seeds: 2,
            requests: 150,
            threads: 1,
        };
        let cases = run(&plan, &ProgressBar::hidden()).unwrap();
        assert_eq!(cases.len(), 3, "two sizes and one unseen type");
        assert_eq!(cases[0].devices, 1);
        assert_eq!(cases[1].devices, 3);
        assert_eq!(cases[2].devices, 3, "the fleet plus one new device");
        assert!(cases[2].label.contains("no checkpoint was trained on"));
        for case in &cases {
            assert!(case.res.entries.iter().all(|e| e.name != "random"));
            for runs in &case.res.runs {
                assert_eq!(runs.by_load.len(), 1);
                assert_eq!(runs.by_load[0].len(), 2, "one run per seed");
                assert!(runs.shifting.is_empty());
            }
        }
        let t = table(&cases);
        assert_eq!(
            t.lines().count(),
            2 + 3,
            "header, rule, one row per fleet:\n{t}"
        );
        assert!(t.contains("| ppo:efficiency |") || t.contains("| prior:efficiency |"));
    }
}
