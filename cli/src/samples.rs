//! Inputs for requests: .npy tensors, PNG/JPEG images, and a model family's held-out samples.

use std::path::Path;

use anyhow::{bail, Context};
use slim_protocol::Tensor;

/// One input with its label, when known.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The tensor to send.
    pub input: Tensor,
    /// Ground-truth class, for labelled samples.
    pub label: Option<u32>,
}

/// Reads a .npy file as a tensor (u8 and f32 are sent as they are; f64 is narrowed to f32).
pub fn read_npy(path: &Path) -> anyhow::Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .with_context(|| format!("{} is not a .npy file", path.display()))?;
    let shape: Vec<u32> = npy.shape().iter().map(|&d| d as u32).collect();
    let dtype = npy.dtype();
    let descr = dtype.descr();
    let tensor = match descr.trim_matches(|c| c == '\'' || c == '"') {
        "|u1" | "<u1" => Tensor::from_u8(shape, npy.into_vec::<u8>()?),
        "<f4" => Tensor::from_f32(shape, &npy.into_vec::<f32>()?),
        "<f8" => {
            let v: Vec<f32> = npy
                .into_vec::<f64>()?
                .into_iter()
                .map(|x| x as f32)
                .collect();
            Tensor::from_f32(shape, &v)
        }
        other => bail!(
            "{}: dtype {other} is not supported (use uint8 or float32)",
            path.display()
        ),
    };
    Ok(tensor)
}

/// Reads a PNG or JPEG and resizes it to the model's `[C,H,W]` as u8 pixels.
pub fn read_image(path: &Path, shape: &[u32]) -> anyhow::Result<Tensor> {
    let [c, h, w] = shape else {
        bail!("model input shape {shape:?} is not [C,H,W]");
    };
    let img =
        image::open(path).with_context(|| format!("cannot decode image {}", path.display()))?;
    let img = img.resize_exact(*w, *h, image::imageops::FilterType::Triangle);
    let data: Vec<u8> = match c {
        1 => img.to_luma8().into_raw(),
        3 => {
            let rgb = img.to_rgb8();
            let plane = (*w * *h) as usize;
            let mut chw = vec![0u8; plane * 3];
            for (i, px) in rgb.pixels().enumerate() {
                for ch in 0..3 {
                    chw[ch * plane + i] = px[ch];
                }
            }
            chw
        }
        _ => bail!("images can feed 1- or 3-channel models, not {c}"),
    };
    Ok(Tensor::from_u8(vec![*c, *h, *w], data))
}

/// Splits an `[N, ...]` tensor into N samples of `[...]`.
pub fn split_batch(batch: &Tensor) -> Vec<Tensor> {
    let Some((&n, rest)) = batch.shape.split_first() else {
        return vec![];
    };
    let per = batch.data.len() / n.max(1) as usize;
    batch
        .data
        .chunks(per.max(1))
        .map(|chunk| Tensor {
            dtype: batch.dtype,
            shape: rest.to_vec(),
            data: chunk.to_vec(),
        })
        .collect()
}

/// Held-out samples of a family (labelled), or its reference inputs, from `models_dir/model`.
pub fn family_samples(models_dir: &Path, model: &str) -> anyhow::Result<Vec<Sample>> {
    let dir = models_dir.join(model);
    let holdout = dir.join("holdout_x.npy");
    if holdout.is_file() {
        let inputs = split_batch(&read_npy(&holdout)?);
        let labels = read_labels(&dir.join("holdout_y.npy")).unwrap_or_default();
        return Ok(inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| Sample {
                input,
                label: labels.get(i).copied(),
            })
            .collect());
    }
    let reference = dir.join("ref_input.npy");
    if reference.is_file() {
        return Ok(split_batch(&read_npy(&reference)?)
            .into_iter()
            .map(|input| Sample { input, label: None })
            .collect());
    }
    bail!(
        "{} has neither holdout_x.npy nor ref_input.npy",
        dir.display()
    )
}

fn read_labels(path: &Path) -> anyhow::Result<Vec<u32>> {
    let bytes = std::fs::read(path)?;
    let npy = npyz::NpyFile::new(&bytes[..])?;
    Ok(npy
        .into_vec::<i64>()?
        .into_iter()
        .map(|v| v as u32)
        .collect())
}
