//! Field checks of whole messages, shared by the coordinator and the agents, and the refusal a
//! sender gets when one fails.

use crate::{
    limits::{self, LimitError},
    AgentInfo, CoordinatorStatus, ErrorCode, InferRequest, PeekedAddress, Telemetry, TensorError,
    Topics, PROTOCOL_VERSION,
};

/// Why a message was refused, and where the sender hears of it. `id` and `reply_to` are only
/// ever set to values that passed their checks, so a refusal can always be published: to
/// `reply_to`, or to `{prefix}/errors` when there is none.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Explanation for the sender.
    pub message: String,
    /// The request id, when it could be read and is valid.
    pub id: Option<String>,
    /// A validated reply topic, when there is one.
    pub reply_to: Option<String>,
    /// For `overloaded`: how long the sender should hold its next requests for the model, ms.
    pub retry_after_ms: Option<u32>,
}

impl Refusal {
    /// A refusal with no address yet.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            id: None,
            reply_to: None,
            retry_after_ms: None,
        }
    }

    /// Addresses the refusal to `id` on `reply_to`, keeping only values that pass their checks.
    pub fn to(mut self, id: Option<&str>, reply_to: Option<&str>, topics: &Topics) -> Self {
        self.id = id
            .filter(|id| limits::check_id(id).is_ok())
            .map(str::to_string);
        self.reply_to = reply_to
            .filter(|r| limits::check_reply_to(r, topics).is_ok())
            .map(str::to_string);
        self
    }

    /// Addresses the refusal from what could be peeked of an undecodable payload.
    pub fn to_peeked(self, peeked: &PeekedAddress, topics: &Topics) -> Self {
        self.to(peeked.id.as_deref(), peeked.reply_to.as_deref(), topics)
    }
}

impl From<LimitError> for Refusal {
    fn from(e: LimitError) -> Self {
        Refusal::new(e.code(), e.to_string())
    }
}

/// The error code of a tensor that is not what it claims.
pub fn tensor_code(e: &TensorError) -> ErrorCode {
    match e {
        TensorError::SizeMismatch { .. } => ErrorCode::BadDtype,
        TensorError::TooManyDims(_) | TensorError::Overflow(_) => ErrorCode::BadShape,
        TensorError::NotFinite { .. } => ErrorCode::BadValue,
    }
}

impl<D: AsRef<[u8]>> InferRequest<D> {
    /// Every check that needs no knowledge of the fleet: version, reply address, id, model
    /// name, numeric fields and the tensor. Returns the validated reply topic.
    pub fn check_fields(&self, topics: &Topics) -> Result<String, Refusal> {
        let refuse = |e: Refusal| Err(e.to(Some(&self.id), self.reply_to.as_deref(), topics));
        if self.v != PROTOCOL_VERSION {
            return refuse(Refusal::new(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {} is not {PROTOCOL_VERSION}", self.v),
            ));
        }
        let Some(reply_to) = self.reply_to.as_deref().filter(|r| !r.is_empty()) else {
            return refuse(Refusal::new(
                ErrorCode::MissingReplyTo,
                "the request has no reply_to",
            ));
        };
        if let Err(e) = limits::check_reply_to(reply_to, topics) {
            return refuse(e.into());
        }
        if let Err(e) = limits::check_id(&self.id) {
            return refuse(e.into());
        }
        let fields = || -> Result<(), LimitError> {
            limits::check_name("model", &self.model)?;
            if let Some(w) = self.width {
                limits::check_width(w)?;
            }
            if let Some(a) = self.min_accuracy {
                limits::check_fraction("min_accuracy", a)?;
            }
            if self.top_k.is_some_and(|k| k > limits::MAX_TOP_K) {
                return Err(LimitError::Value(format!(
                    "top_k must be at most {}",
                    limits::MAX_TOP_K
                )));
            }
            Ok(())
        };
        if let Err(e) = fields() {
            return refuse(e.into());
        }
        if let Err(e) = self.input.validate() {
            return refuse(Refusal::new(tensor_code(&e), e.to_string()));
        }
        Ok(reply_to.to_string())
    }
}

fn all<T>(items: &[T], check: impl Fn(&T) -> Result<(), LimitError>) -> Result<(), LimitError> {
    items.iter().try_for_each(check)
}

impl AgentInfo {
    /// Names, list lengths and figures within their limits.
    pub fn check(&self) -> Result<(), LimitError> {
        limits::check_name("agent", &self.agent)?;
        for (what, text) in [
            ("backend", &self.backend),
            ("backend_reason", &self.backend_reason),
            ("hostname", &self.device.hostname),
            ("device kind", &self.device.kind),
            ("cpu_model", &self.device.cpu_model),
            ("gpu", self.device.gpu.as_ref().unwrap_or(&String::new())),
        ] {
            limits::check_text(what, text)?;
        }
        limits::check_list("models", self.models.len())?;
        all(&self.models, |m| {
            limits::check_name("model", &m.name)?;
            limits::check_list("widths", m.widths.len())?;
            if m.input_shape.len() > limits::MAX_TENSOR_DIMS {
                return Err(LimitError::Value(format!(
                    "input_shape of {} has {} dimensions",
                    m.name,
                    m.input_shape.len()
                )));
            }
            all(&m.widths, |w| {
                limits::check_width(w.width)?;
                limits::check_text("accuracy_source", &w.accuracy_source)?;
                limits::check_fraction("top1", w.top1)
            })
        })?;
        if self.max_queued == Some(0) {
            return Err(LimitError::Value("max_queued must be at least 1".into()));
        }
        if let Some(e) = &self.emulation {
            if !(e.slowdown.is_finite() && e.slowdown >= 1.0) {
                return Err(LimitError::Value(format!(
                    "slowdown must be at least 1, not {}",
                    e.slowdown
                )));
            }
            limits::check_text("emulation profile", e.profile.as_deref().unwrap_or(""))?;
        }
        if let Some(p) = &self.profile {
            limits::check_text("profile name", &p.name)?;
            limits::check_text("profile source", &p.source)?;
            limits::check_list("profile points", p.points.len())?;
            limits::check_measure("idle_power_w", p.idle_power_w.into())?;
            limits::check_measure("max_power_w", p.max_power_w.into())?;
            all(&p.points, |pt| {
                limits::check_name("model", &pt.model)?;
                limits::check_width(pt.width)?;
                limits::check_measure("latency_ms", pt.latency_ms.into())?;
                limits::check_measure("power_w", pt.power_w.unwrap_or(0.0).into())
            })?;
        }
        Ok(())
    }
}

impl CoordinatorStatus {
    /// Its id is a valid name (one topic level) and its router name is short text.
    pub fn check(&self) -> Result<(), LimitError> {
        limits::check_name("coordinator", &self.id)?;
        limits::check_text("router", &self.router)
    }
}

impl Telemetry {
    /// Names, list lengths, key sizes and figures within their limits.
    pub fn check(&self) -> Result<(), LimitError> {
        limits::check_name("agent", &self.agent)?;
        limits::check_list("queues", self.queues.len())?;
        limits::check_list("batches", self.batches.len())?;
        limits::check_list("done", self.done.len())?;
        limits::check_list("refused", self.refused.len())?;
        let max_key = limits::MAX_REPLY_TO_BYTES + 1 + limits::MAX_ID_BYTES;
        let mut key_bytes = 0;
        for key in self
            .done
            .iter()
            .chain(&self.refused)
            .chain(self.batches.iter().flat_map(|b| b.requests.iter()))
        {
            if key.len() > max_key {
                return Err(LimitError::Value(format!(
                    "a request key of {} bytes is longer than {max_key}",
                    key.len()
                )));
            }
            key_bytes += key.len();
        }
        // Agents page their keys at MAX_REPORT_KEY_BYTES; twice that is a broken agent.
        if key_bytes > 2 * limits::MAX_REPORT_KEY_BYTES {
            return Err(LimitError::Value(format!(
                "the report lists {key_bytes} bytes of request keys; the limit is {}",
                limits::MAX_REPORT_KEY_BYTES
            )));
        }
        for (what, v) in [
            ("cpu_util", self.cpu_util),
            ("power_w", self.power_w),
            ("gpu_util", self.gpu_util.unwrap_or(0.0)),
        ] {
            limits::check_measure(what, v.into())?;
        }
        limits::check_measure("energy_j", self.energy_j)?;
        all(&self.batches, |b| {
            limits::check_name("model", &b.model)?;
            limits::check_list("batch requests", b.requests.len())?;
            limits::check_width(b.width)?;
            limits::check_measure("queue_ms", b.queue_ms.into())?;
            limits::check_measure("compute_ms", b.compute_ms.into())?;
            limits::check_measure("energy_j", b.energy_j.into())
        })?;
        all(&self.queues, |q| {
            limits::check_name("model", &q.model)?;
            limits::check_width(q.width)?;
            limits::check_measure("oldest_wait_ms", q.oldest_wait_ms.into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    fn request() -> InferRequest {
        let mut r = InferRequest::new("r1", "digits", Tensor::from_u8(vec![1, 2, 2], vec![0; 4]));
        r.reply_to = Some("replies/me".into());
        r
    }

    #[test]
    fn a_good_request_passes_and_names_its_reply_topic() {
        assert_eq!(
            request().check_fields(&Topics::default()).unwrap(),
            "replies/me"
        );
    }

    #[test]
    fn a_bad_reply_topic_is_refused_without_echoing_it() {
        let t = Topics::default();
        for bad in [
            "x/+",
            "x\0y",
            "slim/v1/agents/a/assign",
            &"r".repeat(70_000),
        ] {
            let mut r = request();
            r.reply_to = Some(bad.to_string());
            let e = r.check_fields(&t).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadReplyTo);
            assert_eq!(e.reply_to, None, "never answered on {bad:?}");
            assert_eq!(e.id.as_deref(), Some("r1"));
        }
    }

    #[test]
    fn an_idle_report_passes_its_checks_and_round_trips() {
        let t = Telemetry::idle("agent-1", 7);
        assert_eq!(t.check(), Ok(()));
        assert_eq!((t.seq, t.outstanding, t.done.len()), (7, 0, 0));
        assert_eq!(crate::decode::<Telemetry>(&crate::encode(&t)).unwrap(), t);
    }

    #[test]
    fn oversized_ids_and_hostile_numbers_get_their_codes() {
        let t = Topics::default();
        let mut r = request();
        r.id = "i".repeat(200_000);
        let e = r.check_fields(&t).unwrap_err();
        assert_eq!((e.code, e.id.clone()), (ErrorCode::BadId, None));
        assert_eq!(e.reply_to.as_deref(), Some("replies/me"));
        let mut r = request();
        r.min_accuracy = Some(f32::NAN);
        assert_eq!(r.check_fields(&t).unwrap_err().code, ErrorCode::BadValue);
        let mut r = request();
        r.input = Tensor::from_f32(vec![1, 2, 2], &[0.0, f32::INFINITY, 0.0, 0.0]);
        assert_eq!(r.check_fields(&t).unwrap_err().code, ErrorCode::BadValue);
        let mut r = request();
        r.input = Tensor::from_u8(vec![u32::MAX, u32::MAX, u32::MAX], vec![0; 4]);
        assert_eq!(r.check_fields(&t).unwrap_err().code, ErrorCode::BadShape);
        let mut r = request();
        r.model = "a/b".into();
        assert_eq!(
            r.check_fields(&t).unwrap_err().code,
            ErrorCode::UnknownModel
        );
    }
}
