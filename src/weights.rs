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

/// A weight store that owns its files and also answers for tensors stored under another
/// naming (e.g. the original Wan checkpoint names), translated to the graph's names by `map`.
pub struct MappedWeights {
    store: WeightStore,
    /// graph (diffusers) name → stored name, for every stored tensor whose name differs.
    alias: std::collections::HashMap<String, String>,
}

impl MappedWeights {
    /// Wraps `store`; `map` translates a stored name to the graph's name, or `None` when the
    /// stored name is already the graph's (or unknown).
    pub fn new(store: WeightStore, map: impl Fn(&str) -> Option<String>) -> Self {
        let alias = store
            .names()
            .into_iter()
            .filter_map(|stored| map(stored).filter(|g| g != stored).map(|g| (g, stored.to_string())))
            .collect();
        MappedWeights { store, alias }
    }

    /// The stored name that serves the graph name `name`.
    pub fn stored_name<'a>(&'a self, name: &'a str) -> &'a str {
        if self.store.contains(name) {
            name
        } else {
            self.alias.get(name).map_or(name, String::as_str)
        }
    }

    pub fn store(&self) -> &WeightStore {
        &self.store
    }

    /// Stored tensors that no graph weight in `used` reads, except those `ignore` accepts
    /// (e.g. tied copies): the "extra tensor" check of a model folder.
    pub fn unused<'a>(&'a self, used: &[&str], ignore: impl Fn(&str) -> bool) -> Vec<&'a str> {
        let used: std::collections::HashSet<&str> = used.iter().map(|n| self.stored_name(n)).collect();
        self.store.names().into_iter().filter(|n| !used.contains(n) && !ignore(n)).collect()
    }
}

impl WeightSource for MappedWeights {
    fn fetch(&self, name: &str, shape: &Shape, dtype: DType) -> Result<Tensor, RuntimeError> {
        let stored = self.stored_name(name);
        let t = StoreWeights::new(&self.store).fetch(stored, shape, dtype)?;
        Ok(t)
    }
}

/// Deterministic pseudo-random weights for the built-in tiny model: every tensor is drawn from
/// a ChaCha8 stream seeded by `(seed, name)`, so a weight's values depend only on its name and
/// shape. Matrices get N(0, 1/fan_in) (fan_in = elements per output row), norm scales
/// (`*norm*.weight`, `*gamma`) 1 + N(0, 0.1²), vectors (biases) N(0, 0.02²), tables
/// (`scale_shift_table`) N(0, 1/dim).
pub struct SeededWeights {
    pub seed: u64,
}

impl SeededWeights {
    /// The tensor called `name` of shape `shape`.
    pub fn tensor(&self, name: &str, shape: &Shape) -> Tensor {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        // FNV-1a of the name, mixed with the seed.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(h ^ self.seed.rotate_left(17));
        let dims = shape.dims();
        let numel: usize = dims.iter().product();
        let is_scale = name.ends_with("gamma") || (name.contains("norm") && name.ends_with("weight"));
        let (mean, std) = if is_scale {
            (1.0, 0.1)
        } else if name.ends_with("scale_shift_table") || name.ends_with("modulation") {
            (0.0, 1.0 / (*dims.last().unwrap_or(&1) as f64).sqrt())
        } else if dims.iter().filter(|&&d| d > 1).count() >= 2 {
            let fan_in = numel / dims.first().copied().unwrap_or(1).max(1);
            (0.0, 1.0 / (fan_in.max(1) as f64).sqrt())
        } else {
            (0.0, 0.02)
        };
        let v = (0..numel)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (mean + std * z) as f32
            })
            .collect();
        Tensor::new(shape.clone(), vidrt_ir::TensorData::F32(v))
            .unwrap_or_else(|_| Tensor::full(shape.clone(), DType::F32, 0.0))
    }
}

impl WeightSource for SeededWeights {
    fn fetch(&self, name: &str, shape: &Shape, dtype: DType) -> Result<Tensor, RuntimeError> {
        if !dtype.is_float() {
            return Err(RuntimeError::Weight {
                name: name.to_string(),
                reason: format!("cannot generate {dtype} weights"),
            });
        }
        Ok(self.tensor(name, shape))
    }
}

/// Standard-normal noise of `shape` from a ChaCha8 stream seeded by `seed` (the initial
/// latents; torch's generator is not reproduced, so the same seed gives other noise than
/// diffusers).
pub fn gaussian_noise(shape: &[usize], seed: u64) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::new(Shape::from(shape.to_vec()), vidrt_ir::TensorData::F32(v))
        .unwrap_or_else(|_| Tensor::full(Shape::from(shape.to_vec()), DType::F32, 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_weights_are_deterministic_and_named() {
        let w = SeededWeights { seed: 7 };
        let s = Shape::from(vec![8usize, 16]);
        let a = w.tensor("blocks.0.attn1.to_q.weight", &s).to_f32_vec();
        assert_eq!(a, w.tensor("blocks.0.attn1.to_q.weight", &s).to_f32_vec());
        assert_ne!(a, w.tensor("blocks.0.attn1.to_k.weight", &s).to_f32_vec());
        assert_ne!(a, SeededWeights { seed: 8 }.tensor("blocks.0.attn1.to_q.weight", &s).to_f32_vec());
        let var = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / a.len() as f64;
        assert!((var - 1.0 / 16.0).abs() < 0.05, "variance {var}");
        let g = w.tensor("blocks.0.norm2.weight", &Shape::from(vec![64usize])).to_f32_vec();
        assert!(g.iter().all(|x| (x - 1.0).abs() < 0.6));
    }

    #[test]
    fn noise_is_standard_normal() {
        let t = gaussian_noise(&[4, 1000], 1);
        let v = t.to_f64_vec();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.1, "mean {mean} var {var}");
        assert_eq!(gaussian_noise(&[3], 5).to_f32_vec(), gaussian_noise(&[3], 5).to_f32_vec());
    }
}
