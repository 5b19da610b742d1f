//! Pushback: after the coordinator refuses a request `overloaded` with a `retry_after_ms`, the
//! client holds its next requests for that model until then and answers them itself, instead
//! of sending what would only be refused. A refused request costs the broker, the coordinator
//! and the client nearly what a served one does; on a shared machine that cost came out of the
//! agents' share (docs/performance.md, "Pushback").

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use slim_protocol::{ErrorCode, ErrorReply, MAX_RETRY_AFTER_MS};

/// Models held at once, at most (the hold map is fed from the network).
const MAX_HELD_MODELS: usize = 1024;

/// Per model, until when requests are held.
#[derive(Debug, Default)]
pub struct Pushback {
    until: HashMap<String, Instant>,
}

impl Pushback {
    /// Takes a reply to a request for `model`: an `overloaded` one with a hint holds the model
    /// for that long (clamped to 1..=[`MAX_RETRY_AFTER_MS`], whatever the reply says).
    pub fn on_reply(&mut self, model: &str, reply: &ErrorReply, now: Instant) {
        let Some(ms) = reply.retry_after_ms else {
            return;
        };
        if reply.code != ErrorCode::Overloaded {
            return;
        }
        let until = now + Duration::from_millis(u64::from(ms.clamp(1, MAX_RETRY_AFTER_MS)));
        if self.until.len() >= MAX_HELD_MODELS && !self.until.contains_key(model) {
            self.until.retain(|_, t| *t > now);
            if self.until.len() >= MAX_HELD_MODELS {
                return;
            }
        }
        let held = self.until.entry(model.to_string()).or_insert(until);
        *held = (*held).max(until);
    }

    /// How much longer requests for `model` are held, if they are.
    pub fn held(&self, model: &str, now: Instant) -> Option<Duration> {
        self.until
            .get(model)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// The answer a held request gets, from this client.
    pub fn refusal(id: &str, model: &str, left: Duration) -> ErrorReply {
        let ms = u32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u32::MAX);
        ErrorReply::new(
            Some(id.to_string()),
            ErrorCode::Overloaded,
            format!(
                "not sent: the coordinator refused an earlier request for model {model:?} as \
                 overloaded and asked for no more for {ms} ms"
            ),
            ORIGIN,
        )
        .retry_after(Some(ms))
    }
}

/// The `origin` of the answers a client gives itself.
pub const ORIGIN: &str = "client";

#[cfg(test)]
mod tests {
    use super::*;

    fn overloaded(retry_after_ms: Option<u32>) -> ErrorReply {
        ErrorReply::new(None, ErrorCode::Overloaded, "busy", "coordinator")
            .retry_after(retry_after_ms)
    }

    #[test]
    fn an_overloaded_reply_holds_its_model_for_the_hint() {
        let (mut p, t0) = (Pushback::default(), Instant::now());
        p.on_reply("digits", &overloaded(Some(50)), t0);
        assert_eq!(p.held("digits", t0), Some(Duration::from_millis(50)));
        assert_eq!(
            p.held("digits", t0 + Duration::from_millis(20)),
            Some(Duration::from_millis(30))
        );
        assert_eq!(p.held("digits", t0 + Duration::from_millis(50)), None);
        assert_eq!(p.held("cifar", t0), None, "other models are not held");
        // A shorter hint later does not cut the hold short.
        p.on_reply(
            "digits",
            &overloaded(Some(1)),
            t0 + Duration::from_millis(10),
        );
        assert_eq!(p.held("digits", t0), Some(Duration::from_millis(50)));
    }

    #[test]
    fn only_an_overloaded_reply_with_a_hint_holds_and_a_hint_is_clamped() {
        let (mut p, t0) = (Pushback::default(), Instant::now());
        p.on_reply("digits", &overloaded(None), t0);
        let other = ErrorReply::new(None, ErrorCode::NoCapacity, "no", "coordinator")
            .retry_after(Some(100));
        p.on_reply("digits", &other, t0);
        assert_eq!(p.held("digits", t0), None);
        p.on_reply("digits", &overloaded(Some(u32::MAX)), t0);
        let max = Duration::from_millis(MAX_RETRY_AFTER_MS.into());
        assert_eq!(p.held("digits", t0), Some(max));
        p.on_reply("cifar", &overloaded(Some(0)), t0);
        assert_eq!(p.held("cifar", t0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn the_held_models_are_bounded() {
        let (mut p, t0) = (Pushback::default(), Instant::now());
        for i in 0..MAX_HELD_MODELS + 10 {
            p.on_reply(&format!("m{i}"), &overloaded(Some(100)), t0);
        }
        assert_eq!(p.until.len(), MAX_HELD_MODELS);
        // Once the holds have passed, new models are taken again.
        let later = t0 + Duration::from_millis(200);
        p.on_reply("new", &overloaded(Some(100)), later);
        assert!(p.held("new", later).is_some());
        assert_eq!(p.until.len(), 1);
    }

    #[test]
    fn a_held_request_is_answered_overloaded_by_the_client() {
        let reply = Pushback::refusal("r1", "digits", Duration::from_micros(2_500));
        assert_eq!(reply.code, ErrorCode::Overloaded);
        assert_eq!(
            (reply.origin.as_str(), reply.id.as_deref()),
            (ORIGIN, Some("r1"))
        );
        assert_eq!(reply.retry_after_ms, Some(3));
    }
}
