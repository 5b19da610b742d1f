//! When each request reached the coordinator, kept until the agent's telemetry reports it done,
//! so the monitor can time the parts of a request's life the coordinator sees. Bounded: at most
//! [`MAX_TRACKED`] requests (the oldest go first) and none older than [`TRACK_MS`]. Tracking a
//! request allocates nothing once its model's name is known (only the tables grow).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt::Write,
    hash::{BuildHasher, RandomState},
    sync::Arc,
    time::{Duration, Instant},
};

use slim_protocol::RequestKey;

/// Requests tracked at most.
pub const MAX_TRACKED: usize = 65_536;
/// Model names shared by the arrivals that name them, at most (others get their own copy).
const MAX_NAMES: usize = 64;
/// A request not reported done within this long is forgotten.
pub const TRACK_MS: u64 = 300_000;

#[derive(Debug)]
struct Arrival {
    at: Instant,
    model: Arc<str>,
    client_hop_ms: Option<f32>,
    placed: bool,
}

/// What a first placement adds to the monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// Model family.
    pub model: Arc<str>,
    /// The client's `sent_at_ms` to the arrival here (two clocks), when the client sent it.
    pub client_hop_ms: Option<f32>,
    /// Arrival here to the assignment handed to the MQTT client.
    pub coordinator_ms: f32,
}

/// Arrivals by a keyed 64-bit fingerprint of the request key.
#[derive(Debug, Default)]
pub struct Arrivals {
    hasher: RandomState,
    pending: HashMap<u64, Arrival>,
    order: VecDeque<(Instant, u64)>,
    /// The model names arrivals share.
    names: HashSet<Arc<str>>,
    /// Where a key's wire form is written to be fingerprinted.
    wire: String,
}

impl Arrivals {
    fn fingerprint(&self, wire: &str) -> u64 {
        self.hasher.hash_one(wire)
    }

    /// The fingerprint of `key`'s wire form ([`RequestKey::wire`]), written into a reused buffer.
    fn key_fingerprint(&mut self, key: &RequestKey) -> u64 {
        self.wire.clear();
        let _ = write!(self.wire, "{}\u{0}{}", key.reply_to, key.id);
        self.fingerprint(&self.wire)
    }

    /// `model`, shared with the arrivals that already name it.
    fn name(&mut self, model: &str) -> Arc<str> {
        if let Some(name) = self.names.get(model) {
            return name.clone();
        }
        let name: Arc<str> = model.into();
        if self.names.len() < MAX_NAMES {
            self.names.insert(name.clone());
        }
        name
    }

    /// Records a new request's arrival at `now` (wall clock `now_ms`); a repeat is ignored.
    pub fn arrive(
        &mut self,
        key: &RequestKey,
        model: &str,
        sent_at_ms: Option<u64>,
        now: Instant,
        now_ms: u64,
    ) {
        let id = self.key_fingerprint(key);
        if self.pending.contains_key(&id) {
            return;
        }
        self.expire(now);
        if self.order.len() == MAX_TRACKED {
            if let Some((_, oldest)) = self.order.pop_front() {
                self.pending.remove(&oldest);
            }
        }
        let client_hop_ms = sent_at_ms.map(|sent| (now_ms as f64 - sent as f64) as f32);
        let model = self.name(model);
        self.order.push_back((now, id));
        self.pending.insert(
            id,
            Arrival {
                at: now,
                model,
                client_hop_ms,
                placed: false,
            },
        );
    }

    /// The first placement of `key` at `now`; `None` for a request not tracked or placed before.
    pub fn place(&mut self, key: &RequestKey, now: Instant) -> Option<Placed> {
        let id = self.key_fingerprint(key);
        let arrival = self.pending.get_mut(&id).filter(|a| !a.placed)?;
        arrival.placed = true;
        Some(Placed {
            model: arrival.model.clone(),
            client_hop_ms: arrival.client_hop_ms,
            coordinator_ms: millis(now.saturating_duration_since(arrival.at)),
        })
    }

    /// A done notice (a key in `Telemetry.done`, wire form) seen at `now`: the model and the
    /// time since arrival, for a request placed from here.
    pub fn done(&mut self, wire: &str, now: Instant) -> Option<(Arc<str>, f32)> {
        let id = self.fingerprint(wire);
        let arrival = self.pending.remove(&id).filter(|a| a.placed)?;
        Some((
            arrival.model,
            millis(now.saturating_duration_since(arrival.at)),
        ))
    }

    fn expire(&mut self, now: Instant) {
        let ttl = Duration::from_millis(TRACK_MS);
        while let Some((at, id)) = self.order.front().copied() {
            if now.saturating_duration_since(at) <= ttl {
                break;
            }
            self.order.pop_front();
            if self.pending.get(&id).is_some_and(|a| a.at == at) {
                self.pending.remove(&id);
            }
        }
    }

    /// Requests tracked now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending.len()
    }
}

fn millis(d: Duration) -> f32 {
    d.as_secs_f32() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_timed_from_arrival_to_placement_and_to_its_done_notice() {
        let mut a = Arrivals::default();
        let t0 = Instant::now();
        let key = RequestKey::new("r/1", "x");
        a.arrive(&key, "digits", Some(995), t0, 1_000);
        a.arrive(
            &key,
            "digits",
            Some(0),
            t0 + Duration::from_millis(3),
            1_003,
        );
        let placed = a.place(&key, t0 + Duration::from_millis(2)).unwrap();
        assert_eq!(&*placed.model, "digits");
        assert_eq!(placed.client_hop_ms, Some(5.0));
        assert!((placed.coordinator_ms - 2.0).abs() < 1e-3);
        assert_eq!(
            a.place(&key, t0 + Duration::from_millis(9)),
            None,
            "a re-route"
        );
        let (model, ms) = a.done(&key.wire(), t0 + Duration::from_millis(40)).unwrap();
        assert_eq!(&*model, "digits");
        assert!((ms - 40.0).abs() < 1e-3);
        assert_eq!(a.len(), 0);
        assert_eq!(a.done(&key.wire(), t0), None);
    }

    #[test]
    fn a_key_is_fingerprinted_as_its_wire_form_and_a_model_name_is_shared() {
        let mut a = Arrivals::default();
        let key = RequestKey::new("replies/c", "id\u{0}with nul");
        assert_eq!(a.key_fingerprint(&key), a.fingerprint(&key.wire()));
        let t0 = Instant::now();
        a.arrive(&key, "digits", None, t0, 0);
        a.arrive(&RequestKey::new("replies/c", "2"), "digits", None, t0, 0);
        let models: Vec<_> = a.pending.values().map(|p| p.model.clone()).collect();
        assert!(Arc::ptr_eq(&models[0], &models[1]));
        assert!(a.done(&key.wire(), t0).is_none(), "not placed");
    }

    #[test]
    fn requests_are_forgotten_after_the_tracking_time() {
        let mut a = Arrivals::default();
        let t0 = Instant::now();
        a.arrive(&RequestKey::new("r", "old"), "m", None, t0, 0);
        let later = t0 + Duration::from_millis(TRACK_MS + 1);
        a.arrive(&RequestKey::new("r", "new"), "m", None, later, 0);
        assert_eq!(a.len(), 1);
        assert_eq!(a.place(&RequestKey::new("r", "old"), later), None);
    }
}
