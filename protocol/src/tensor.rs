//! A dense tensor as it travels on the wire: dtype, shape and little-endian bytes.

use bytes::Bytes;
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

/// A dense row-major tensor. Its bytes are [`Bytes`], so a tensor can share the buffer it
/// arrived in or the one it is sent from instead of being copied
/// ([`crate::decode_request_shared`]); `Tensor<&[u8]>` is a view that borrows them while a
/// message is decoded. Whatever holds the bytes, they are encoded as the wire's `bin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "D: AsRef<[u8]>"))]
pub struct Tensor<D = Bytes> {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub shape: Vec<u32>,
    /// Elements in row-major order, little-endian (MessagePack `bin`).
    #[serde(serialize_with = "as_bin")]
    pub data: D,
}

fn as_bin<D: AsRef<[u8]>, S: serde::Serializer>(data: &D, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(data.as_ref())
}

/// Why a tensor is not what it claims to be.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
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
    /// The shape has more dimensions than [`crate::limits::MAX_TENSOR_DIMS`].
    #[error("tensor has {0} dimensions; at most {max} are accepted", max = crate::limits::MAX_TENSOR_DIMS)]
    TooManyDims(usize),
    /// The shape's element count does not fit in memory arithmetic.
    #[error("tensor shape {0:?} declares more elements than can exist")]
    Overflow(Vec<u32>),
    /// A float element is NaN or infinite.
    #[error("input element {index} is {value}: inputs must be finite numbers")]
    NotFinite {
        /// Position of the first bad element.
        index: usize,
        /// Its value.
        value: f32,
    },
}

impl Tensor {
    /// A float tensor from values.
    pub fn from_f32(shape: Vec<u32>, values: &[f32]) -> Self {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self {
            dtype: DType::F32,
            shape,
            data: data.into(),
        }
    }

    /// A u8 tensor from pixels.
    pub fn from_u8(shape: Vec<u32>, values: Vec<u8>) -> Self {
        Self {
            dtype: DType::U8,
            shape,
            data: values.into(),
        }
    }
}

impl<D> Tensor<D> {
    /// The same tensor with its bytes mapped by `f` (e.g. a borrowed view to shared [`Bytes`]).
    pub fn map_data<E>(self, f: impl FnOnce(D) -> E) -> Tensor<E> {
        Tensor {
            dtype: self.dtype,
            shape: self.shape,
            data: f(self.data),
        }
    }
}

impl<D: AsRef<[u8]>> Tensor<D> {
    /// Number of elements the shape declares; `None` when the product overflows.
    pub fn element_count(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d as usize))
    }

    /// Checks the shape (at most [`crate::limits::MAX_TENSOR_DIMS`] dimensions, no overflow),
    /// that the bytes match dtype × shape, and that float elements are finite.
    pub fn validate(&self) -> Result<(), TensorError> {
        if self.shape.len() > crate::limits::MAX_TENSOR_DIMS {
            return Err(TensorError::TooManyDims(self.shape.len()));
        }
        let expected = self
            .element_count()
            .and_then(|n| n.checked_mul(self.dtype.size()))
            .ok_or_else(|| TensorError::Overflow(self.shape.clone()))?;
        let data = self.data.as_ref();
        if expected != data.len() {
            return Err(TensorError::SizeMismatch {
                expected,
                actual: data.len(),
                shape: self.shape.clone(),
            });
        }
        if self.dtype == DType::F32 {
            let bad = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .enumerate()
                .find(|(_, v)| !v.is_finite());
            if let Some((index, value)) = bad {
                return Err(TensorError::NotFinite { index, value });
            }
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
                .as_ref()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::U8 => self.data.as_ref().iter().map(|&b| b as f32).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_are_a_messagepack_bin_whatever_holds_them() {
        let shared = Tensor::from_u8(vec![2], vec![1, 2]);
        let owned = shared.clone().map_data(|d| d.to_vec());
        let borrowed = shared.clone().map_data(|_| &[1u8, 2][..]);
        for bytes in [
            crate::encode(&shared),
            crate::encode(&owned),
            crate::encode(&borrowed),
        ] {
            let value = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
            let data = value
                .as_map()
                .unwrap()
                .iter()
                .find(|(k, _)| k.as_str() == Some("data"));
            assert_eq!(data.unwrap().1, rmpv::Value::Binary(vec![1, 2]));
        }
    }

    #[test]
    fn float_tensors_round_trip_their_values() {
        let t = Tensor::from_f32(vec![1, 3], &[1.5, -2.0, 0.25]);
        assert!(t.validate().is_ok());
        assert_eq!(t.to_f32_vec(), vec![1.5, -2.0, 0.25]);
    }

    #[test]
    fn a_short_buffer_is_reported_with_both_sizes() {
        let mut t = Tensor::from_u8(vec![2, 2], vec![1, 2, 3, 4]);
        t.data.truncate(3);
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
    fn hostile_shapes_are_refused_without_overflow() {
        let huge = Tensor::from_u8(vec![u32::MAX, u32::MAX, u32::MAX], vec![0; 4]);
        assert_eq!(huge.element_count(), None);
        assert!(matches!(huge.validate(), Err(TensorError::Overflow(_))));
        let deep = Tensor::from_u8(vec![1; 9], vec![0]);
        assert_eq!(deep.validate(), Err(TensorError::TooManyDims(9)));
    }

    #[test]
    fn non_finite_floats_are_refused() {
        let t = Tensor::from_f32(vec![3], &[0.0, f32::NAN, 1.0]);
        assert!(matches!(
            t.validate(),
            Err(TensorError::NotFinite { index: 1, .. })
        ));
        assert!(Tensor::from_f32(vec![1], &[f32::INFINITY])
            .validate()
            .is_err());
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
