//! Host tensors: typed, row-major, contiguous data with a shape. Used for graph inputs,
//! outputs and weights on every backend, and as the CPU backend's values.

use half::{bf16, f16};

use crate::{DType, Shape};

/// The elements of a host tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::BF16(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
        }
    }
}

/// A tensor's element count does not match its shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor data has {len} elements but shape {shape} needs {need}")]
pub struct ShapeDataMismatch {
    pub shape: Shape,
    pub len: usize,
    pub need: usize,
}

/// A host tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Shape,
    data: TensorData,
}

impl Tensor {
    pub fn new(shape: impl Into<Shape>, data: TensorData) -> Result<Self, ShapeDataMismatch> {
        let shape = shape.into();
        let need = shape.numel();
        if data.len() != need {
            return Err(ShapeDataMismatch { shape, len: data.len(), need });
        }
        Ok(Tensor { shape, data })
    }

    pub fn from_f32(shape: impl Into<Shape>, v: Vec<f32>) -> Result<Self, ShapeDataMismatch> {
        Self::new(shape, TensorData::F32(v))
    }

    pub fn from_i64(shape: impl Into<Shape>, v: Vec<i64>) -> Result<Self, ShapeDataMismatch> {
        Self::new(shape, TensorData::I64(v))
    }

    /// A tensor of `dtype` filled with `value` (rounded to the dtype).
    pub fn full(shape: impl Into<Shape>, dtype: DType, value: f64) -> Self {
        let shape = shape.into();
        let n = shape.numel();
        let data = match dtype {
            DType::F32 => TensorData::F32(vec![value as f32; n]),
            DType::F16 => TensorData::F16(vec![f16::from_f64(value); n]),
            DType::BF16 => TensorData::BF16(vec![bf16::from_f64(value); n]),
            DType::I32 => TensorData::I32(vec![value as i32; n]),
            DType::I64 => TensorData::I64(vec![value as i64; n]),
        };
        Tensor { shape, data }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn into_data(self) -> TensorData {
        self.data
    }

    /// The f32 elements when the tensor is f32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements converted to f32 (integers converted by value).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The elements converted to f64 (for comparisons).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            _ => self.to_f32_vec().into_iter().map(f64::from).collect(),
        }
    }

    /// The elements converted to i64 (floats truncated toward zero).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            TensorData::I64(v) => v.clone(),
            TensorData::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            _ => self.to_f32_vec().into_iter().map(|x| x as i64).collect(),
        }
    }

    /// Converts to `dtype` (round to nearest for floats, truncation for float → int).
    pub fn cast(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        let data = match dtype {
            DType::F32 => TensorData::F32(self.to_f32_vec()),
            DType::F16 => TensorData::F16(self.to_f32_vec().into_iter().map(f16::from_f32).collect()),
            DType::BF16 => TensorData::BF16(self.to_f32_vec().into_iter().map(bf16::from_f32).collect()),
            DType::I32 => TensorData::I32(self.to_i64_vec().into_iter().map(|x| x as i32).collect()),
            DType::I64 => TensorData::I64(self.to_i64_vec()),
        };
        Tensor { shape: self.shape.clone(), data }
    }

    /// The same data with another shape of equal element count.
    pub fn reshape(self, shape: impl Into<Shape>) -> Result<Tensor, ShapeDataMismatch> {
        Tensor::new(shape, self.data)
    }

    /// Index of the first NaN or infinite element, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        match &self.data {
            TensorData::F32(v) => v.iter().position(|x| !x.is_finite()),
            TensorData::F16(v) => v.iter().position(|x| !x.is_finite()),
            TensorData::BF16(v) => v.iter().position(|x| !x.is_finite()),
            TensorData::I32(_) | TensorData::I64(_) => None,
        }
    }
}
