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
    if !path.exists() {
        bail!("file not found: {}", path.display());
    }
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

/// A decoded PNG or JPEG, as 8-bit RGB, before it is fitted to a model.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    rgb: image::RgbImage,
}

impl DecodedImage {
    /// Decodes `path`; with `invert`, every channel becomes 255 - v (dark ink on a light
    /// background turns into the light-on-dark the digits family was trained on). An alpha
    /// channel is ignored: the colour values are used as stored.
    pub fn open(path: &Path, invert: bool) -> anyhow::Result<Self> {
        if !path.exists() {
            bail!("file not found: {}", path.display());
        }
        let mut rgb = image::open(path)
            .with_context(|| format!("cannot decode image {}", path.display()))?
            .to_rgb8();
        if invert {
            image::imageops::invert(&mut rgb);
        }
        Ok(Self { rgb })
    }

    /// Wraps an image already in memory.
    pub fn from_rgb(rgb: image::RgbImage) -> Self {
        Self { rgb }
    }
}

/// Reads a PNG or JPEG and fits it to the model's `[C,H,W]` as u8 pixels (see [`image_tensor`]).
pub fn read_image(path: &Path, shape: &[u32]) -> anyhow::Result<Tensor> {
    image_tensor(&DecodedImage::open(path, false)?, shape)
}

/// Fits an image to a model's `[C,H,W]` input as u8 pixels. The image is resized by area
/// averaging (a box filter: each output pixel is the mean of the input pixels it covers), the
/// way the UCI digits were made (32x32 bitmaps, each 4x4 block counted) and what keeps a
/// pixel-replicated upscale exactly reversible; 1-channel models get Rec. 709 luma.
pub fn image_tensor(image: &DecodedImage, shape: &[u32]) -> anyhow::Result<Tensor> {
    let [c, h, w] = shape else {
        bail!(
            "model input shape [{}] is not [C,H,W]",
            shape
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let (c, h, w) = (*c as usize, *h as usize, *w as usize);
    anyhow::ensure!(h > 0 && w > 0, "model input is {h}x{w} pixels");
    let (src_w, src_h) = image.rgb.dimensions();
    let (src_w, src_h) = (src_w as usize, src_h as usize);
    anyhow::ensure!(src_w > 0 && src_h > 0, "the image has no pixels");
    let raw = image.rgb.as_raw();
    let planes: Vec<Vec<f32>> = match c {
        1 => {
            let luma: Vec<f32> = raw
                .chunks_exact(3)
                .map(|p| {
                    0.2126 * f32::from(p[0]) + 0.7152 * f32::from(p[1]) + 0.0722 * f32::from(p[2])
                })
                .collect();
            vec![luma]
        }
        3 => (0..3)
            .map(|ch| {
                raw.iter()
                    .skip(ch)
                    .step_by(3)
                    .map(|&v| f32::from(v))
                    .collect()
            })
            .collect(),
        _ => bail!("images can feed 1- or 3-channel models, not {c}"),
    };
    let mut data = Vec::with_capacity(c * h * w);
    for plane in &planes {
        data.extend(
            area_resize(plane, src_w, src_h, w, h)
                .into_iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8),
        );
    }
    Ok(Tensor::from_u8(vec![c as u32, h as u32, w as u32], data))
}

/// For each output cell along one axis of `from` pixels resized to `to`: the input pixels it
/// covers and how much of each (weights sum to 1).
fn coverage(from: usize, to: usize) -> Vec<Vec<(usize, f64)>> {
    let scale = from as f64 / to as f64;
    (0..to)
        .map(|o| {
            let (start, end) = (o as f64 * scale, (o + 1) as f64 * scale);
            let first = start.floor() as usize;
            let last = (end.ceil() as usize).min(from);
            (first..last)
                .filter_map(|i| {
                    let overlap = end.min(i as f64 + 1.0) - start.max(i as f64);
                    (overlap > 1e-12).then_some((i, overlap / scale))
                })
                .collect()
        })
        .collect()
}

/// Area-averaging resize of one `src_w` x `src_h` plane (row-major) to `dst_w` x `dst_h`.
fn area_resize(src: &[f32], src_w: usize, src_h: usize, dst_w: usize, dst_h: usize) -> Vec<f32> {
    let (xs, ys) = (coverage(src_w, dst_w), coverage(src_h, dst_h));
    let mut out = Vec::with_capacity(dst_w * dst_h);
    for row in &ys {
        for col in &xs {
            let mut sum = 0.0f64;
            for &(y, wy) in row {
                for &(x, wx) in col {
                    sum += f64::from(src[y * src_w + x]) * wy * wx;
                }
            }
            out.push(sum as f32);
        }
    }
    out
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
            data: batch.data.slice_ref(chunk),
        })
        .collect()
}

/// Fails with a clear message when `path`, a file or folder a flag names with a default
/// relative to the repository (`models`, `profiles/...`, `router/policies/...`), is missing.
pub fn require_path(path: &Path, what: &str, flag: &str) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let relative = if path.is_relative() {
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "?".into());
        format!(" (looked in {cwd})")
    } else {
        String::new()
    };
    bail!(
        "{what} was not found: {}{relative}; pass {flag} PATH, or run slim from the \
         repository's root folder",
        path.display()
    )
}

/// Checks that `models_dir` is a folder of model families and holds `model`; the errors say
/// what was looked for and how to point at the right folder.
pub fn check_family(models_dir: &Path, model: &str) -> anyhow::Result<()> {
    require_path(models_dir, "the models folder", "--models-dir")?;
    anyhow::ensure!(
        models_dir.is_dir(),
        "the models folder {} is not a folder; pass --models-dir PATH",
        models_dir.display()
    );
    if models_dir.join(model).join("manifest.toml").is_file() {
        return Ok(());
    }
    let mut families: Vec<String> = std::fs::read_dir(models_dir)
        .with_context(|| format!("cannot read the models folder {}", models_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("manifest.toml").is_file())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .collect();
    families.sort();
    bail!(
        "no model family {model:?} in {} (no {model}/manifest.toml there); families there: {}",
        models_dir.display(),
        if families.is_empty() {
            "none (is --models-dir the folder that holds the family folders?)".to_string()
        } else {
            families.join(", ")
        }
    )
}

/// Held-out samples of a family (labelled), or its reference inputs, from `models_dir/model`.
pub fn family_samples(models_dir: &Path, model: &str) -> anyhow::Result<Vec<Sample>> {
    check_family(models_dir, model)?;
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
        "model family {} has no sample inputs: neither holdout_x.npy nor ref_input.npy",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> DecodedImage {
        DecodedImage::from_rgb(image::RgbImage::from_fn(w, h, |x, y| {
            let v = f(x, y);
            image::Rgb([v, v, v])
        }))
    }

    #[test]
    fn a_pixel_replicated_upscale_averages_back_to_the_original() {
        let original = |x: u32, y: u32| ((x * 31 + y * 17) % 256) as u8;
        let big = gray(128, 128, |x, y| original(x / 16, y / 16));
        let t = image_tensor(&big, &[1, 8, 8]).unwrap();
        let expected: Vec<u8> = (0..8)
            .flat_map(|y| (0..8).map(move |x| original(x, y)))
            .collect();
        assert_eq!(t.shape, vec![1, 8, 8]);
        assert_eq!(t.data, expected);
    }

    #[test]
    fn downscaling_averages_the_area_each_pixel_covers() {
        // 4x4 blocks with k of 16 pixels on give round(k * 255 / 16), as the UCI digits count.
        let img = gray(
            8,
            4,
            |x, y| if x < 4 && y * 4 + x % 4 < 5 { 255 } else { 0 },
        );
        let t = image_tensor(&img, &[1, 1, 2]).unwrap();
        assert_eq!(t.data, vec![(5.0f32 * 255.0 / 16.0).round() as u8, 0]);
        // A size that does not divide: 3 pixels into 2, the middle one shared.
        let img = gray(3, 1, |x, _| [0, 90, 180][x as usize]);
        let t = image_tensor(&img, &[1, 1, 2]).unwrap();
        assert_eq!(t.data, vec![30, 150]);
    }

    #[test]
    fn three_channel_models_get_planes_in_chw_order() {
        let img =
            DecodedImage::from_rgb(image::RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30])));
        let t = image_tensor(&img, &[3, 2, 2]).unwrap();
        assert_eq!(t.data, [[10u8; 4], [20; 4], [30; 4]].concat());
    }

    #[test]
    fn missing_files_and_folders_are_named() {
        let err = read_npy(Path::new("/nonexistent/x.npy")).unwrap_err();
        assert_eq!(err.to_string(), "file not found: /nonexistent/x.npy");
        let err = DecodedImage::open(Path::new("/nonexistent/x.png"), false).unwrap_err();
        assert_eq!(err.to_string(), "file not found: /nonexistent/x.png");
        let err = family_samples(Path::new("/nonexistent/models"), "digits").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("the models folder was not found: /nonexistent/models"),
            "{text}"
        );
        assert!(text.contains("--models-dir"), "{text}");
    }
}
