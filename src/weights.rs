//! Binds a [`WeightStore`] to a backend as its [`WeightSource`].

use vidrt_graph::{WeightError, WeightStore};
use vidrt_ir::{DType, Shape, Tensor};
use vidrt_runtime::{RuntimeError, WeightSource};

/// A weight store seen through an optional name prefix (e.g. the whole-pipeline store
/// serving the transformer's names as `transformer.<name>`; empty for none).
pub struct StoreWeights<'a> {
    pub store: &'a WeightStore,
    pub prefix: String,
}

impl<'a> StoreWeights<'a> {
    pub fn new(store: &'a WeightStore) -> Self {
        StoreWeights { store, prefix: String::new() }
    }
}

impl WeightSource for StoreWeights<'_> {
    fn fetch(&self, name: &str, shape: &Shape, dtype: DType) -> Result<Tensor, RuntimeError> {
        let full = format!("{}{}", self.prefix, name);
        let t = self.store.get(&full).map_err(|e| match e {
            WeightError::Missing { .. } => {
                RuntimeError::Weight { name: full.clone(), reason: format!("missing from {}", self.store.describe()) }
            }
            other => RuntimeError::Weight { name: full.clone(), reason: other.to_string() },
        })?;
        if t.shape() != shape || t.dtype().is_float() != dtype.is_float() {
            return Err(RuntimeError::ShapeMismatch {
                name: full,
                expected: shape.clone(),
                expected_dtype: dtype,
                got: t.shape().clone(),
                got_dtype: t.dtype(),
            });
        }
        Ok(t)
    }
}
