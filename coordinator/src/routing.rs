//! The coordinator's router: a fixed one ([`slim_router::build_router`]), or a PPO policy that
//! keeps learning from live rewards ([`OnlineRefinement`]).

use std::time::Instant;

use slim_protocol::{RequestKey, Telemetry};
use slim_router::ppo::Checkpoint;
use slim_router::{
    build_router, Observation, Route, RouteRequest, Router, RouterError, RouterSettings,
};

use crate::config::CoordinatorConfig;
use crate::online::{OnlineRefinement, OnlineView};

/// Places requests.
pub enum Routing {
    /// A router that does not learn.
    Fixed(Box<dyn Router>),
    /// A PPO policy refined online (`--online-refine`).
    Online(Box<OnlineRefinement>),
}

impl Routing {
    /// The router `config` asks for; refuses a configuration that cannot run.
    pub fn build(config: &CoordinatorConfig) -> anyhow::Result<Self> {
        config.check().map_err(anyhow::Error::msg)?;
        if config.online.enabled {
            let path = config.policy.as_ref().ok_or(RouterError::MissingPolicy)?;
            let checkpoint = Checkpoint::load(path)?;
            return Ok(Self::Online(Box::new(OnlineRefinement::new(
                checkpoint,
                path,
                &config.online,
                config.seed,
            ))));
        }
        Ok(Self::Fixed(build_router(
            config.router,
            &RouterSettings {
                seed: config.seed,
                batch_size: config.batch_size,
                policy: config.policy.clone(),
                ..RouterSettings::default()
            },
        )?))
    }

    /// Name reported in decisions and metrics.
    pub fn name(&self) -> &str {
        match self {
            Self::Fixed(router) => router.name(),
            Self::Online(online) => online.name(),
        }
    }

    /// Places a request whose dedup key is `key`.
    pub fn route(
        &mut self,
        observation: &Observation,
        request: &RouteRequest,
        key: &RequestKey,
        now: Instant,
    ) -> Option<Route> {
        match self {
            Self::Fixed(router) => router.route(observation, request),
            Self::Online(online) => online.route(observation, request, &key.wire(), now),
        }
    }

    /// Sees an agent's telemetry (its batch records are the online learner's rewards).
    pub fn on_telemetry(&mut self, telemetry: &Telemetry) {
        if let Self::Online(online) = self {
            online.on_telemetry(telemetry);
        }
    }

    /// Periodic work: expiring decisions, installing and starting updates.
    pub fn tick(&mut self, now: Instant) {
        if let Self::Online(online) = self {
            online.tick(now);
        }
    }

    /// Online refinement's state, when it runs.
    pub fn online_view(&self) -> Option<OnlineView> {
        match self {
            Self::Fixed(_) => None,
            Self::Online(online) => Some(online.view()),
        }
    }
}

#[cfg(test)]
mod tests {
    use slim_router::RouterKind;

    use super::*;

    #[test]
    fn online_refinement_is_built_only_on_a_ppo_policy() {
        let policy = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../router/policies/efficiency.safetensors");
        let mut config = CoordinatorConfig {
            router: RouterKind::Greedy,
            ..CoordinatorConfig::default()
        };
        config.online.enabled = true;
        let error = Routing::build(&config).err().unwrap().to_string();
        assert!(error.contains("--router ppo"), "{error}");
        config.router = RouterKind::Ppo;
        let error = Routing::build(&config).err().unwrap().to_string();
        assert!(error.contains("--policy"), "{error}");
        config.policy = Some(policy);
        let routing = Routing::build(&config).unwrap();
        assert_eq!(routing.name(), "ppo:efficiency+online");
        assert!(routing.online_view().is_some());
        config.online.enabled = false;
        let routing = Routing::build(&config).unwrap();
        assert_eq!(routing.name(), "ppo:efficiency");
        assert!(routing.online_view().is_none());
    }
}
