//! Per-device scores kept between requests, so that a decision costs the devices that changed
//! since the last one rather than the whole fleet.
//!
//! Greedy, least-loaded, join-shortest-queue and PPO (deciding by argmax) pick the best-scoring
//! candidate, the first in (device, width, batch) order on a tie. A device's best candidate
//! depends only on its own view, on the request's constraint [`Class`] (pinned width, accuracy
//! floor, deadline) and, for greedy and PPO, on the fleet-wide [`Scales`]. [`ScoreCache`] keeps
//! each device's best candidate per class in a tournament tree (each node holds the better of
//! its two children, the left one on a tie), so the decision is the root and rescoring one
//! device costs its own candidates plus `log2(n)` comparisons. A device is rescored when its
//! [`DeviceView::version`] differs from the one scored, or is 0 (not tracked); every device
//! when the scales or the number of devices change. The pick is exactly the full scan's: the
//! tree returns the first best leaf, and a leaf is the first best candidate of its device.
//! What the tree cannot order the same way as the scan (a NaN score) makes [`ScoreCache::best`]
//! answer [`Unordered`], and the router scans in full.

use std::collections::HashMap;

use crate::{DeviceView, Observation, RouteRequest, Scales};

/// Constraint classes kept per model; the oldest is dropped past this.
pub(crate) const MAX_CLASSES: usize = 16;

/// A score that orders candidates.
pub(crate) trait Ranked {
    /// Whether `self` is strictly better than `other` (the earlier one wins a tie).
    fn beats(&self, other: &Self) -> bool;
}

/// What one device offers a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Leaf<T> {
    /// No eligible candidate.
    Empty,
    /// Its best candidate (the first of equal bests).
    Best(T),
    /// A score the tree cannot order as the full scan does (NaN).
    Unordered,
}

/// The cache cannot decide this request the way the full scan does; scan in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unordered;

/// The parts of a request a device's best candidate depends on (bit patterns, so that equal
/// keys mean identical inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Class {
    width: Option<u32>,
    min_accuracy: Option<u32>,
    deadline_ms: Option<u32>,
}

impl Class {
    /// The class of `request`; `deadline` false for routers that ignore deadlines.
    pub fn of(request: &RouteRequest, deadline: bool) -> Self {
        Self {
            width: request.width.map(f32::to_bits),
            min_accuracy: request.min_accuracy.map(f32::to_bits),
            deadline_ms: request.deadline_ms.filter(|_| deadline),
        }
    }
}

/// Whether any device of `observation` is tracked (a nonzero version); when none is, routers
/// skip the cache (it would rescore every device on every request anyway).
pub(crate) fn tracked(observation: &Observation) -> bool {
    observation.devices.iter().any(|d| d.version != 0)
}

const NONE: u32 = u32::MAX;

/// The best candidate of every device for one model and class, in a tournament tree.
#[derive(Debug)]
struct DeviceScores<T> {
    versions: Vec<u64>,
    /// Each device's [`Scales::contribution`], as bits.
    contributions: Vec<Option<(u32, u32)>>,
    scales: Scales,
    leaves: Vec<Leaf<T>>,
    unordered: usize,
    /// Leaf count rounded up to a power of two; node `k`'s children are `2k` and `2k + 1`, leaf
    /// `i` is node `width + i`; each node holds the index of its winning leaf, or `NONE`.
    width: usize,
    tree: Vec<u32>,
}

impl<T: Ranked> DeviceScores<T> {
    fn new() -> Self {
        Self {
            versions: Vec::new(),
            contributions: Vec::new(),
            scales: Scales::from_contributions(std::iter::empty()),
            leaves: Vec::new(),
            unordered: 0,
            width: 1,
            tree: vec![NONE; 2],
        }
    }

    fn reset(&mut self, n: usize) {
        self.versions.clear();
        self.versions.resize(n, 0);
        self.contributions.clear();
        self.contributions.resize(n, None);
        self.leaves.clear();
        self.leaves.resize_with(n, || Leaf::Empty);
        self.unordered = 0;
        self.width = n.next_power_of_two().max(1);
        self.tree.clear();
        self.tree.resize(2 * self.width, NONE);
    }

    /// The better of leaves `a` and `b`, `a` (the earlier) on a tie.
    fn winner(&self, a: u32, b: u32) -> u32 {
        match (a, b) {
            (_, NONE) => a,
            (NONE, _) => b,
            _ => match (&self.leaves[a as usize], &self.leaves[b as usize]) {
                (Leaf::Best(x), Leaf::Best(y)) if y.beats(x) => b,
                _ => a,
            },
        }
    }

    fn set_leaf(&mut self, i: usize, leaf: Leaf<T>) {
        let was_unordered = matches!(self.leaves[i], Leaf::Unordered);
        let is_unordered = matches!(leaf, Leaf::Unordered);
        self.unordered = self.unordered + usize::from(is_unordered) - usize::from(was_unordered);
        self.tree[self.width + i] = if matches!(leaf, Leaf::Best(_)) {
            i as u32
        } else {
            NONE
        };
        self.leaves[i] = leaf;
    }

    fn update_path(&mut self, i: usize) {
        let mut node = (self.width + i) / 2;
        while node >= 1 {
            self.tree[node] = self.winner(self.tree[2 * node], self.tree[2 * node + 1]);
            node /= 2;
        }
    }

    fn rebuild(&mut self) {
        for node in (1..self.width).rev() {
            self.tree[node] = self.winner(self.tree[2 * node], self.tree[2 * node + 1]);
        }
    }

    /// Brings every device's leaf up to date with `observation`.
    fn sync<F>(
        &mut self,
        observation: &Observation,
        scaled: bool,
        changed: &mut Vec<usize>,
        score: &mut F,
    ) where
        F: FnMut(usize, &DeviceView, &Scales) -> Leaf<T>,
    {
        let devices = &observation.devices;
        let n = devices.len();
        let resized = self.versions.len() != n;
        if resized {
            self.reset(n);
        }
        changed.clear();
        for (i, (device, seen)) in devices.iter().zip(&mut self.versions).enumerate() {
            if resized || device.version == 0 || device.version != *seen {
                changed.push(i);
                *seen = device.version;
            }
        }
        let mut all = resized;
        if scaled {
            let mut dirty = resized;
            for &i in changed.iter() {
                let c = Scales::contribution(&devices[i]).map(|(l, e)| (l.to_bits(), e.to_bits()));
                if c != self.contributions[i] {
                    self.contributions[i] = c;
                    dirty = true;
                }
            }
            if dirty {
                let scales = Scales::from_contributions(
                    self.contributions
                        .iter()
                        .flatten()
                        .map(|&(l, e)| (f32::from_bits(l), f32::from_bits(e))),
                );
                let same = scales.latency_ms.to_bits() == self.scales.latency_ms.to_bits()
                    && scales.energy_mj.to_bits() == self.scales.energy_mj.to_bits();
                if !same {
                    self.scales = scales;
                    all = true;
                }
            }
        }
        if all || changed.len() * 8 > n {
            let rescore: &mut dyn Iterator<Item = usize> = if all {
                &mut (0..n)
            } else {
                &mut changed.iter().copied()
            };
            for i in rescore {
                let leaf = score(i, &devices[i], &self.scales);
                self.set_leaf(i, leaf);
            }
            self.rebuild();
        } else {
            for &i in changed.iter() {
                let leaf = score(i, &devices[i], &self.scales);
                self.set_leaf(i, leaf);
                self.update_path(i);
            }
        }
    }

    fn best(&self) -> Option<&T> {
        match self.tree[1] {
            NONE => None,
            i => match &self.leaves[i as usize] {
                Leaf::Best(t) => Some(t),
                _ => None,
            },
        }
    }
}

/// Per-device best candidates of each (model, class) a router has seen.
#[derive(Debug)]
pub(crate) struct ScoreCache<T> {
    models: HashMap<String, Vec<(Class, DeviceScores<T>)>>,
    changed: Vec<usize>,
    rescored: u64,
}

impl<T> Default for ScoreCache<T> {
    fn default() -> Self {
        Self {
            models: HashMap::new(),
            changed: Vec::new(),
            rescored: 0,
        }
    }
}

impl<T> ScoreCache<T> {
    /// Devices scored so far (for tests: the cache must score fewer than the full scans).
    #[cfg(test)]
    pub fn rescored(&self) -> u64 {
        self.rescored
    }
}

impl<T: Ranked> ScoreCache<T> {
    /// The best candidate of `observation` for `request` of `class` (the first best in device
    /// order), rescoring with `score(index, device, scales)` only the devices that changed since
    /// this class was last asked (all of them when `scaled` and the scales changed).
    pub fn best<F>(
        &mut self,
        observation: &Observation,
        request: &RouteRequest,
        class: Class,
        scaled: bool,
        mut score: F,
    ) -> Result<Option<&T>, Unordered>
    where
        F: FnMut(usize, &DeviceView, &Scales) -> Leaf<T>,
    {
        if !self.models.contains_key(&request.model) {
            self.models.insert(request.model.clone(), Vec::new());
        }
        let classes = self.models.get_mut(&request.model).expect("inserted above");
        let at = match classes.iter().position(|(c, _)| *c == class) {
            Some(at) => at,
            None => {
                if classes.len() >= MAX_CLASSES {
                    classes.remove(0);
                }
                classes.push((class, DeviceScores::new()));
                classes.len() - 1
            }
        };
        let scores = &mut classes[at].1;
        let rescored = &mut self.rescored;
        let mut counted = |i: usize, device: &DeviceView, scales: &Scales| {
            *rescored += 1;
            score(i, device, scales)
        };
        scores.sync(observation, scaled, &mut self.changed, &mut counted);
        if scores.unordered > 0 {
            return Err(Unordered);
        }
        Ok(scores.best())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Random observation updates shared by the routers' cached-versus-full tests.

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use crate::observation::tests::device;
    use crate::{Observation, RouteRequest, Router};

    /// What [`compare`] saw.
    #[derive(Debug, Default)]
    pub struct Compared {
        /// Decisions compared.
        pub decisions: u64,
        /// Decisions that placed the request.
        pub placed: u64,
        /// Distinct devices chosen.
        pub chosen: usize,
        /// In the calm phases (load changes only, one constraint class): devices in the
        /// observations, summed (what full scans score), and devices the cache rescored.
        pub calm_devices: u64,
        /// See `calm_devices`.
        pub calm_rescored: u64,
    }

    /// Drives `cached` on versioned observations and `full` on the same observations with
    /// versions 0 (its full scan), several seeds, each through a wild phase (every kind of
    /// change, some classes of request, fleets that grow and shrink) and then a calm one
    /// (the coordinator's steady state: an assignment or a report per decision, one class);
    /// asserts that every pick is the same. `rescored` reads the cache's count.
    pub fn compare<R: Router>(
        cached: &mut R,
        full: &mut R,
        rescored: impl Fn(&R) -> u64,
    ) -> Compared {
        let mut seen = Compared::default();
        let mut chosen = std::collections::BTreeSet::new();
        for seed in 0..6 {
            let mut rng = StdRng::seed_from_u64(seed);
            let (mut observation, mut last) = fleet(3 + 5 * seed as usize, &mut rng);
            let calm_request = RouteRequest {
                model: "m".into(),
                ..Default::default()
            };
            for step in 0..700 {
                let calm = step >= 400;
                let before = rescored(cached);
                let request = if calm {
                    calm_perturb(&mut observation, &mut last, &mut rng);
                    calm_request.clone()
                } else {
                    perturb(&mut observation, &mut last, &mut rng);
                    request(&mut rng)
                };
                let got = cached.route(&observation, &request);
                let want = full.route(&untracked(&observation), &request);
                assert_eq!(got, want, "seed {seed} step {step}, {request:?}");
                seen.decisions += 1;
                if calm && step > 400 {
                    seen.calm_devices += observation.devices.len() as u64;
                    seen.calm_rescored += rescored(cached) - before;
                }
                if let Some(route) = got {
                    seen.placed += 1;
                    chosen.insert((seed, route.device));
                }
            }
        }
        seen.chosen = chosen.len();
        assert!(
            seen.placed > seen.decisions / 2 && seen.chosen > 20,
            "the comparison must exercise real picks: {seen:?}"
        );
        assert!(
            seen.calm_rescored * 3 < seen.calm_devices,
            "in the calm phases the cache must rescore far fewer devices than a full scan: {seen:?}"
        );
        seen
    }

    /// An assignment to one device, and sometimes a report that drains another.
    pub fn calm_perturb(observation: &mut Observation, last: &mut u64, rng: &mut StdRng) {
        let n = observation.devices.len();
        let d = &mut observation.devices[rng.gen_range(0..n)];
        d.outstanding += 1;
        d.backlog_ms = d.outstanding as f32 * 0.7;
        *last += 1;
        d.version = *last;
        if rng.gen_bool(0.3) {
            let d = &mut observation.devices[rng.gen_range(0..n)];
            d.outstanding = 0;
            d.backlog_ms = 0.0;
            d.queue_depth = rng.gen_range(0..3);
            *last += 1;
            d.version = *last;
        }
    }

    /// A fleet of `n` devices with varied profiles (some identical, for ties), versioned from 1.
    pub fn fleet(n: usize, rng: &mut StdRng) -> (Observation, u64) {
        let mut devices = Vec::new();
        for i in 0..n {
            let mut d = device(&format!("d{i}"), rng.gen_range(0..4));
            if i % 3 != 0 {
                let speed = [0.5f32, 1.0, 2.0][rng.gen_range(0..3)];
                for w in &mut d.widths {
                    for b in &mut w.batches {
                        b.latency_ms *= speed;
                    }
                }
            }
            d.version = i as u64 + 1;
            devices.push(d);
        }
        (Observation { devices }, n as u64)
    }

    /// Changes one to three devices at random (load, telemetry, sometimes going offline or a
    /// new profile, which moves the scales) and gives each a new version; once in a while
    /// changes nothing, or adds or removes a device (every version then new, as when the
    /// coordinator rebuilds its view).
    pub fn perturb(observation: &mut Observation, last: &mut u64, rng: &mut StdRng) {
        let roll = rng.gen_range(0..100);
        if roll < 5 {
            return;
        }
        let devices = &mut observation.devices;
        if roll < 8 {
            if rng.gen_bool(0.5) && devices.len() > 1 {
                devices.pop();
            } else {
                let mut d = device("new", rng.gen_range(0..4));
                d.outstanding = rng.gen_range(0..5);
                devices.push(d);
            }
            for d in devices.iter_mut() {
                *last += 1;
                d.version = *last;
            }
            return;
        }
        for _ in 0..rng.gen_range(1..=3) {
            let i = rng.gen_range(0..devices.len());
            let d = &mut devices[i];
            match rng.gen_range(0..10) {
                0..=3 => {
                    // An assignment, or answers in telemetry.
                    d.outstanding = if rng.gen_bool(0.7) {
                        d.outstanding + 1
                    } else {
                        d.outstanding.saturating_sub(rng.gen_range(0..4))
                    };
                    d.backlog_ms = d.outstanding as f32 * 0.7;
                }
                4..=5 => {
                    d.queue_depth = rng.gen_range(0..6);
                    d.cpu_util = rng.gen_range(0.0..1.0);
                    d.power_w = rng.gen_range(1.0..30.0);
                    d.widths[rng.gen_range(0..3)].recent_latency_ms = Some(rng.gen_range(0.5..9.0));
                }
                6 => d.slowdown = [1.0, 1.0, 2.0, 0.5][rng.gen_range(0..4)],
                7 => d.online = !d.online || rng.gen_bool(0.5),
                8 => {
                    // A new profile; rarely a broken one (NaN power).
                    let w = d.widths.len() - 1;
                    d.widths[w].batches[0].latency_ms = rng.gen_range(1.0..12.0);
                    d.widths[w].batches[1].power_w =
                        if rng.gen_bool(0.1) { f32::NAN } else { 15.0 };
                }
                _ => d.mem_free_bytes = [1 << 30, 600_000, 2_000_000][rng.gen_range(0..3)],
            }
            *last += 1;
            d.version = *last;
        }
    }

    /// A request from a handful of constraint classes.
    pub fn request(rng: &mut StdRng) -> RouteRequest {
        RouteRequest {
            model: ["m", "m", "m", "other"][rng.gen_range(0..4)].into(),
            width: [None, None, None, Some(0.5)][rng.gen_range(0..4)],
            min_accuracy: [None, None, Some(0.95)][rng.gen_range(0..3)],
            deadline_ms: [None, Some(3), Some(20)][rng.gen_range(0..3)],
        }
    }

    /// The same observation with every version 0 (not tracked): routers then take the full
    /// path, the reference.
    pub fn untracked(observation: &Observation) -> Observation {
        let mut copy = observation.clone();
        copy.devices.iter_mut().for_each(|d| d.version = 0);
        copy
    }
}
