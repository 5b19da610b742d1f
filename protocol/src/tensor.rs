//! A dense tensor as it travels on the wire: dtype, shape and little-endian bytes.

use serde::{Deserialize, Serialize};

/// Element type of a [`Tensor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit IEEE float, model-ready input (already preprocessed).
    F32,
    /// 8-bit unsigned pixels, 0..=255; the agent applies the model's preprocessing.
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::U8 => 1,
        }
    }
}

/// A dense row-major tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub shape: Vec<u32>,
    /// Elements in row-major order, little-endian.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Why a tensor is not what it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// The byte count does not match dtype × shape.
    #[error("tensor data holds {actual} bytes but dtype and shape {shape:?} need {expected}")]
    SizeMismatch {
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes present.
        actual: usize,
        /// The declared shape.
        shape: Vec<u32>,
    },
}

impl Tensor {
    /// A float tensor from values.
    pub fn from_f32(shape: Vec<u32>, values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self {
            dtype: DType::F32,
            shape,
            data,
        }
    }

    /// A u8 tensor from pixels.
    pub fn from_u8(shape: Vec<u32>, values: Vec<u8>) -> Self {
        Self {
            dtype: DType::U8,
            shape,
            data: values,
        }
    }

    /// Number of elements the shape declares.
    pub fn element_count(&self) -> usize {
        self.shape.iter().map(|&d| d as usize).product()
    }

    /// Checks that the bytes match dtype × shape.
    pub fn validate(&self) -> Result<(), TensorError> {
        let expected = self.element_count() * self.dtype.size();
        if expected != self.data.len() {
            return Err(TensorError::SizeMismatch {
                expected,
                actual: self.data.len(),
                shape: self.shape.clone(),
            });
        }
        Ok(())
    }

    /// True when this is one sample of shape `sample`: `[C,H,W]`, or `[1,C,H,W]` with a unit batch.
    pub fn is_sample_of(&self, sample: &[u32]) -> bool {
        self.shape == sample
            || matches!(self.shape.split_first(), Some((1, rest)) if rest == sample)
    }

    /// Elements as f32: floats are decoded, u8 are widened (no scaling).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self.dtype {
            DType::F32 => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::U8 => self.data.iter().map(|&b| b as f32).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_tensors_round_trip_their_values() {
        let t = Tensor::from_f32(vec![1, 3], &[1.5, -2.0, 0.25]);
        assert!(t.validate().is_ok());
        assert_eq!(t.to_f32_vec(), vec![1.5, -2.0, 0.25]);
    }

    #[test]
    fn a_short_buffer_is_reported_with_both_sizes() {
        let mut t = Tensor::from_u8(vec![2, 2], vec![1, 2, 3, 4]);
        t.data.pop();
        assert_eq!(
            t.validate(),
            Err(TensorError::SizeMismatch {
                expected: 4,
                actual: 3,
                shape: vec![2, 2]
            })
        );
    }

    #[test]
    fn a_sample_may_carry_a_unit_batch_dimension() {
        let chw = Tensor::from_u8(vec![1, 2, 2], vec![0; 4]);
        assert!(chw.is_sample_of(&[1, 2, 2]));
        let nchw = Tensor::from_u8(vec![1, 1, 2, 2], vec![0; 4]);
        assert!(nchw.is_sample_of(&[1, 2, 2]));
        assert!(!Tensor::from_u8(vec![2, 2], vec![0; 4]).is_sample_of(&[1, 2, 2]));
        assert!(!Tensor::from_u8(vec![2, 1, 2, 2], vec![0; 8]).is_sample_of(&[1, 2, 2]));
    }
}
