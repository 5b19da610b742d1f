//! The fleet's capacity, from its profiles: the yardstick of the load sweep.

use crate::fleet::Fleet;

/// Requests per second the fleet sustains at best for `model_mix`: each device runs every model
/// at its cheapest per-request cost (any width, any of `batch_sizes` up to its largest batch
/// that fits its memory: in practice the slimmest width in full batches), on all its instances,
/// and serves the mix over the models it has; the fleet's capacity is the sum over devices.
///
/// It is an upper bound: a router that honours accuracy floors, or whose batches do not fill,
/// runs below it, so no router need keep up at 0.95 of it.
pub fn sustainable_capacity_per_s(fleet: &Fleet, model_mix: &[f64], batch_sizes: &[u16]) -> f64 {
    fleet
        .devices
        .iter()
        .map(|d| {
            let (mut ms, mut share) = (0.0, 0.0);
            for (m, w) in fleet.models.iter().zip(model_mix) {
                let best = m
                    .widths
                    .iter()
                    .flat_map(|width| batch_sizes.iter().map(move |&b| (width, b)))
                    .filter(|(width, b)| {
                        *b <= d.max_batch && m.instance_mem_bytes(width, *b) <= d.memory_bytes
                    })
                    .filter_map(|(width, b)| {
                        let (lat, _) = d.profile.cost(&m.name, width.width, b)?;
                        Some(f64::from(lat) / f64::from(b))
                    })
                    .fold(f64::INFINITY, f64::min);
                if best.is_finite() && *w > 0.0 {
                    ms += w * best;
                    share += w;
                }
            }
            if share == 0.0 {
                return 0.0;
            }
            f64::from(d.instances) * 1000.0 / (ms / share).max(1e-9)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::tests::tiny_fleet;

    #[test]
    fn capacity_adds_up_devices_at_their_cheapest_batch() {
        let fleet = tiny_fleet();
        let one = sustainable_capacity_per_s(&fleet, &[1.0, 1.0], &[1]);
        let big = sustainable_capacity_per_s(&fleet, &[1.0, 1.0], &[1, 4, 16]);
        assert!(one > 0.0 && big > one, "{one} {big}");
        let mut half = fleet.clone();
        half.devices.truncate(1);
        let part = sustainable_capacity_per_s(&half, &[1.0, 1.0], &[1, 4, 16]);
        assert!(part > 0.0 && part < big);
    }
}
