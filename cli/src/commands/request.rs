//! `slim request`: send one request and print the prediction.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};
use clap::Args;
use slim_client::{
    client::{Reply, SlimClient},
    samples::{image_tensor, read_npy, DecodedImage},
};
use slim_protocol::{decode, AgentInfo, InferRequest, Tensor};

use super::BrokerArgs;

/// Sends one inference request over the broker and prints the answer.
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Model family.
    #[arg(long)]
    pub model: String,
    /// Input: a .npy tensor ([C,H,W] or [1,C,H,W], uint8 pixels or float32 model-ready values)
    /// or a PNG/JPEG image, averaged down (area/box filter) to the model's input size. The
    /// digits family expects light ink on a dark background (see --invert).
    #[arg(long)]
    pub input: PathBuf,
    /// Invert the image's pixels (255 - v) before sending: for dark ink on a light background.
    #[arg(long)]
    pub invert: bool,
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

/// An answer and how long it took, end to end.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The result or the refusal.
    pub reply: Reply,
    /// From publishing the request to receiving the answer.
    pub latency: Duration,
}

/// Sends the request described by `args` and waits for its answer; the input file is checked
/// and decoded before anything is sent, and a PNG/JPEG is resized to the model's input shape
/// as the agents announce it.
pub async fn ask(args: &RequestArgs) -> anyhow::Result<Answer> {
    let input = InputFile::open(&args.input, args.invert)?;
    let client = args.broker.connect("slim-request").await?;
    let outcome = async {
        let tensor = match input {
            InputFile::Tensor(tensor) => tensor,
            InputFile::Image(image) => {
                let shape = model_shape(&client, &args.broker, &args.model).await?;
                image_tensor(&image, &shape).with_context(|| {
                    format!("{} cannot feed model {}", args.input.display(), args.model)
                })?
            }
        };
        let mut request =
            InferRequest::new(uuid::Uuid::new_v4().to_string(), args.model.clone(), tensor);
        request.width = args.width;
        request.min_accuracy = args.min_accuracy;
        request.top_k = Some(args.top_k);
        let started = std::time::Instant::now();
        let reply = client
            .request(request, args.timeout)
            .await
            .with_context(|| {
                format!(
                    "no answer from the system on {} (prefix {}): is a coordinator running there?",
                    args.broker.broker, args.broker.topic_prefix
                )
            })?;
        Ok(Answer {
            reply,
            latency: started.elapsed(),
        })
    }
    .await;
    client.disconnect().await;
    outcome
}

/// Runs the command.
pub async fn run(args: RequestArgs) -> anyhow::Result<()> {
    let Answer { reply, latency } = ask(&args).await?;
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

/// The request's input, read before connecting.
enum InputFile {
    /// A .npy tensor, sent as it is.
    Tensor(Tensor),
    /// A decoded image, resized once the model's input shape is known.
    Image(DecodedImage),
}

impl InputFile {
    fn open(path: &Path, invert: bool) -> anyhow::Result<Self> {
        if !path.exists() {
            bail!("file not found: {}", path.display());
        }
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if ext == "npy" {
            anyhow::ensure!(
                !invert,
                "--invert applies to images; invert a .npy tensor before saving it"
            );
            return Ok(Self::Tensor(read_npy(path)?));
        }
        Ok(Self::Image(DecodedImage::open(path, invert)?))
    }
}

/// The model's input shape, from the agents' retained status.
async fn model_shape(
    client: &SlimClient,
    broker: &BrokerArgs,
    model: &str,
) -> anyhow::Result<Vec<u32>> {
    let status_filter = client.topics().status_filter();
    // Tap first, then subscribe: the broker sends the retained status messages right after
    // the subscription is acknowledged (a broker need not send them again on a repeated
    // subscription to the same filter: the embedded one does not).
    let mut statuses = client.tap(&status_filter);
    client.resubscribe(&status_filter).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut seen: Vec<String> = Vec::new();
    while let Ok(Some((_, payload))) = tokio::time::timeout_at(deadline, statuses.recv()).await {
        let Ok(info) = decode::<AgentInfo>(&payload) else {
            continue;
        };
        if let Some(m) = info.models.iter().find(|m| m.name == model) {
            return Ok(m.input_shape.clone());
        }
        for m in &info.models {
            if !seen.contains(&m.name) {
                seen.push(m.name.clone());
            }
        }
    }
    let seen = if seen.is_empty() {
        "no agent status at all there".to_string()
    } else {
        format!("the agents there serve {}", seen.join(", "))
    };
    bail!(
        "no agent on {} (prefix {}) announces model {model:?}, so its input shape is unknown \
         ({seen}); check --broker and --topic-prefix, or pass a .npy tensor",
        broker.broker,
        broker.topic_prefix
    )
}
