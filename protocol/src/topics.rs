//! Topic names. All topics live under one configurable prefix (default `slim/v1`).

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "slim/v1";

/// Builds and parses the topic names of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

/// What an `agents/{agent}/...` topic refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentTopic {
    /// `agents/{agent}/status`: retained [`crate::AgentInfo`].
    Status(String),
    /// `agents/{agent}/telemetry`: periodic [`crate::Telemetry`].
    Telemetry(String),
    /// `agents/{agent}/assign`: [`crate::Assignment`] from the coordinator.
    Assign(String),
}

impl Default for Topics {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Topics {
    /// Topics under `prefix`; a trailing `/` is ignored.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where clients publish requests for `model`.
    pub fn request(&self, model: &str) -> String {
        format!("{}/requests/{model}", self.prefix)
    }

    /// Subscription filter for requests of every model.
    pub fn requests_filter(&self) -> String {
        format!("{}/requests/+", self.prefix)
    }

    /// The model name of a request topic, if `topic` is one.
    pub fn parse_request<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic
            .strip_prefix(&self.prefix)?
            .strip_prefix("/requests/")?;
        (!rest.is_empty() && !rest.contains('/')).then_some(rest)
    }

    /// True for any topic under `{prefix}/requests/`, even one whose model level is empty,
    /// nested or invalid (those are refused with an error, not ignored).
    pub fn is_request(&self, topic: &str) -> bool {
        topic
            .strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.starts_with("/requests/"))
    }

    /// Where the coordinator sends assignments for `agent`.
    pub fn assign(&self, agent: &str) -> String {
        format!("{}/agents/{agent}/assign", self.prefix)
    }

    /// Where `agent` keeps its retained status.
    pub fn status(&self, agent: &str) -> String {
        format!("{}/agents/{agent}/status", self.prefix)
    }

    /// Where `agent` publishes telemetry.
    pub fn telemetry(&self, agent: &str) -> String {
        format!("{}/agents/{agent}/telemetry", self.prefix)
    }

    /// Subscription filter for every agent's status.
    pub fn status_filter(&self) -> String {
        format!("{}/agents/+/status", self.prefix)
    }

    /// Subscription filter for every agent's telemetry.
    pub fn telemetry_filter(&self) -> String {
        format!("{}/agents/+/telemetry", self.prefix)
    }

    /// Classifies an `agents/{agent}/{kind}` topic.
    pub fn parse_agent(&self, topic: &str) -> Option<AgentTopic> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix("/agents/")?;
        let (agent, kind) = rest.split_once('/')?;
        if agent.is_empty() {
            return None;
        }
        let agent = agent.to_string();
        match kind {
            "status" => Some(AgentTopic::Status(agent)),
            "telemetry" => Some(AgentTopic::Telemetry(agent)),
            "assign" => Some(AgentTopic::Assign(agent)),
            _ => None,
        }
    }

    /// Where the coordinator publishes a [`crate::Decision`] for every routed request, in
    /// [`crate::Decisions`] batches.
    pub fn decisions(&self) -> String {
        format!("{}/decisions", self.prefix)
    }

    /// Where coordinator `id` keeps its retained status. Each member of a coordinator group
    /// has its own, so one member's last will never marks the others offline.
    pub fn coordinator_status(&self, id: &str) -> String {
        format!("{}/coordinators/{id}/status", self.prefix)
    }

    /// Subscription filter for every coordinator's status.
    pub fn coordinator_status_filter(&self) -> String {
        format!("{}/coordinators/+/status", self.prefix)
    }

    /// The coordinator id of a `coordinators/{id}/status` topic.
    pub fn parse_coordinator_status(&self, topic: &str) -> Option<String> {
        let rest = topic
            .strip_prefix(&self.prefix)?
            .strip_prefix("/coordinators/")?;
        let id = rest.strip_suffix("/status")?;
        (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
    }

    /// Where errors go when the offending message carried no reply address.
    pub fn dead_letters(&self) -> String {
        format!("{}/errors", self.prefix)
    }

    /// A conventional reply topic for a client; any topic works as `reply_to`.
    pub fn client_replies(&self, client: &str) -> String {
        format!("{}/clients/{client}/replies", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_topics_round_trip_the_model_name() {
        let t = Topics::new("slim/v1/");
        assert_eq!(t.request("digits"), "slim/v1/requests/digits");
        assert_eq!(t.parse_request("slim/v1/requests/digits"), Some("digits"));
        assert_eq!(t.parse_request("slim/v1/requests/"), None);
        assert_eq!(t.parse_request("other/v1/requests/digits"), None);
    }

    #[test]
    fn agent_topics_are_classified_by_kind() {
        let t = Topics::default();
        assert_eq!(
            t.parse_agent(&t.status("a1")),
            Some(AgentTopic::Status("a1".into()))
        );
        assert_eq!(
            t.parse_agent(&t.telemetry("a1")),
            Some(AgentTopic::Telemetry("a1".into()))
        );
        assert_eq!(
            t.parse_agent(&t.assign("a1")),
            Some(AgentTopic::Assign("a1".into()))
        );
        assert_eq!(t.parse_agent("slim/v1/agents/a1/other"), None);
        assert_eq!(t.parse_agent("slim/v1/agents//status"), None);
    }

    #[test]
    fn each_coordinator_has_its_own_status_topic() {
        let t = Topics::default();
        assert_eq!(t.coordinator_status("c1"), "slim/v1/coordinators/c1/status");
        assert_eq!(
            t.parse_coordinator_status(&t.coordinator_status("c1"))
                .as_deref(),
            Some("c1")
        );
        assert_eq!(
            t.parse_coordinator_status("slim/v1/coordinators//status"),
            None
        );
        assert_eq!(
            t.parse_coordinator_status("slim/v1/coordinators/a/b/status"),
            None
        );
        assert_eq!(t.parse_coordinator_status("slim/v1/agents/c1/status"), None);
    }
}
