//! `slim request`: send one request and print the prediction.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::Args;
use slim_protocol::{decode, AgentInfo, InferRequest, Tensor};

use super::BrokerArgs;
use crate::{
    client::{Reply, SlimClient},
    samples::{read_image, read_npy},
};

/// Sends one inference request over the broker and prints the answer.
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Model family.
    #[arg(long)]
    pub model: String,
    /// Input: a .npy tensor ([C,H,W] or [1,C,H,W], uint8 pixels or float32 model-ready values)
    /// or a PNG/JPEG image (resized to the model's input).
    #[arg(long)]
    pub input: PathBuf,
    /// Pin a width instead of letting the router choose.
    #[arg(long)]
    pub width: Option<f32>,
    /// Lowest acceptable accuracy of the width used, as a fraction.
    #[arg(long)]
    pub min_accuracy: Option<f32>,
    /// Number of classes to print.
    #[arg(long, default_value_t = 5)]
    pub top_k: u16,
    /// How long to wait for the answer.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub timeout: Duration,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub async fn run(args: RequestArgs) -> anyhow::Result<()> {
    let broker = args.broker.options();
    let prefix = &args.broker.topic_prefix;
    let client_id = format!("slim-request-{}", uuid::Uuid::new_v4().simple());
    let status_filter = slim_protocol::Topics::new(prefix).status_filter();
    let client = SlimClient::connect(
        &broker,
        prefix,
        &client_id,
        std::slice::from_ref(&status_filter),
    )
    .await
    .with_context(|| format!("cannot reach the broker at {}", broker.url))?;
    let input = load_input(&client, &status_filter, &args).await?;
    let mut request =
        InferRequest::new(uuid::Uuid::new_v4().to_string(), args.model.clone(), input);
    request.width = args.width;
    request.min_accuracy = args.min_accuracy;
    request.top_k = Some(args.top_k);
    let started = std::time::Instant::now();
    let reply = client.request(request, args.timeout).await?;
    let latency = started.elapsed();
    client.disconnect().await;
    match reply {
        Reply::Result(r) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!(
                "model {} width {:.2} on {} (batch {}, {:.1} ms end to end; agent: queue {:.1} ms, compute {:.1} ms)",
                r.model, r.width, r.agent, r.batch_size, latency.as_secs_f64() * 1000.0,
                r.timings.queue_ms, r.timings.compute_ms
            );
            for c in &r.top_k {
                println!(
                    "  {:>6.2}%  class {:>3}  {}",
                    c.score * 100.0,
                    c.class,
                    c.label
                );
            }
            println!(
                "width accuracy {:.2}% (manifest top-1); router {}",
                r.accuracy * 100.0,
                r.router
            );
            Ok(())
        }
        Reply::Error(e) => bail!("refused by {}: {} ({})", e.origin, e.message, e.code),
    }
}

async fn load_input(
    client: &SlimClient,
    status_filter: &str,
    args: &RequestArgs,
) -> anyhow::Result<Tensor> {
    let ext = args
        .input
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if ext == "npy" {
        return read_npy(&args.input);
    }
    let shape = model_shape(client, status_filter, &args.model).await?;
    read_image(&args.input, &shape)
}

/// The model's input shape, from the agents' retained status.
async fn model_shape(
    client: &SlimClient,
    status_filter: &str,
    model: &str,
) -> anyhow::Result<Vec<u32>> {
    let mut statuses = client.tap(status_filter);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    // Retained statuses arrived at subscribe time; ask the broker again by re-reading the tap.
    client.resubscribe(status_filter).await?;
    while let Ok(Some((_, payload))) = tokio::time::timeout_at(deadline, statuses.recv()).await {
        if let Ok(info) = decode::<AgentInfo>(&payload) {
            if let Some(m) = info.models.iter().find(|m| m.name == model) {
                return Ok(m.input_shape.clone());
            }
        }
    }
    bail!("no agent announces model {model:?}, so its input shape is unknown; pass a .npy tensor instead")
}
