//! Talking to a Slim Scheduler deployment from the outside, and standing one up in-process.
//!
//! This is the kit the operator CLI (`slim`) and the end-to-end tests (`slim-tests`) share, so
//! that neither has to depend on the other, and so that a program that only sends requests does
//! not link tract, candle or plotters:
//!
//! - [`client`]: [`client::SlimClient`], an MQTT request client with a private reply topic; it
//!   matches answers to requests by id, retries a request that has no answer (same id), drops
//!   duplicate answers, holds a model's requests when the coordinator asks ([`pushback`]), and
//!   can tap other topics.
//! - [`samples`]: inputs for requests: `.npy` tensors, PNG/JPEG images fitted to a model's
//!   input shape, and a model family's labelled held-out samples.
//! - [`load`]: an open-loop Poisson load generator ([`load::run_open_loop`], described by a
//!   [`load::LoadSpec`]) that draws from [`samples`], sends through a [`client::SlimClient`],
//!   and accounts for every answer ([`load::LoadReport`], [`load::Summary`]).
//! - [`http`]: a minimal HTTP/1.0 GET, for reading the coordinator's monitoring endpoints.
//! - `cluster` (feature `cluster`): a whole deployment in one process: an embedded (or
//!   external) broker, a coordinator and agents. `slim demo`, `slim eval` and the end-to-end
//!   tests run on it; it is the only part that pulls in the agent (tract), the coordinator and
//!   the router.
//!
//! With default features the crate depends on `slim-protocol` and `slim-mqtt` (without its
//! embedded broker) and none of the daemons.

pub mod client;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod http;
pub mod load;
pub mod pushback;
pub mod samples;
