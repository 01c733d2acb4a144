//! TMA tensor maps: what a [`ParamTy::TensorMap`](super::builder::ParamTy::TensorMap) kernel
//! parameter describes, shared by the simulator and the CUDA backend.
//!
//! A [`TensorMapDesc`] is the tiled tensor map of `cuTensorMapEncodeTiled`: element type,
//! rank (1..=5), global address, dimensions (innermost first), byte strides of the outer
//! dimensions, box (the tile one `cp.async.bulk.tensor` copies), shared-memory swizzle,
//! element strides 1, no interleave, and out-of-bounds elements filled with zeros
//! (`CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE`). [`TensorMapDesc::check`] applies the driver's
//! documented rules (global address 16-byte aligned, strides multiples of 16 below 2⁴⁰, box
//! dimensions 1..=256 with an inner box of a multiple of 16 bytes, at most 128 bytes with the
//! 128-byte swizzle).
//!
//! The real `CUtensorMap` is opaque (the driver encodes it); the CUDA backend builds one from
//! the description. The simulator instead takes vidrt's own 128-byte encoding
//! ([`TensorMapDesc::encode_sim`]), little-endian:
//!
//! | bytes   | field                                                      |
//! |---------|------------------------------------------------------------|
//! | 0–3     | magic `VTMA`                                               |
//! | 4       | element type ([`TmaDtype`] code)                           |
//! | 5       | rank                                                       |
//! | 6       | swizzle (0 none, 1 128-byte)                               |
//! | 7       | 0                                                          |
//! | 8–15    | global address                                             |
//! | 16–55   | five u64 dimensions (unused ones 1)                        |
//! | 56–87   | four u64 byte strides of dimensions 1..=4 (unused ones 0)  |
//! | 88–107  | five u32 box dimensions (unused ones 1)                    |
//! | 108–127 | 0                                                          |

/// Element types of a tensor map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TmaDtype {
    /// `CU_TENSOR_MAP_DATA_TYPE_BFLOAT16`.
    BF16,
    /// `CU_TENSOR_MAP_DATA_TYPE_FLOAT16`.
    F16,
    /// `CU_TENSOR_MAP_DATA_TYPE_FLOAT32`.
    F32,
}

impl TmaDtype {
    pub fn bytes(self) -> u32 {
        match self {
            TmaDtype::BF16 | TmaDtype::F16 => 2,
            TmaDtype::F32 => 4,
        }
    }

    fn code(self) -> u8 {
        match self {
            TmaDtype::BF16 => 1,
            TmaDtype::F16 => 2,
            TmaDtype::F32 => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(TmaDtype::BF16),
            2 => Some(TmaDtype::F16),
            3 => Some(TmaDtype::F32),
            _ => None,
        }
    }
}

/// The shared-memory layout a tensor map writes its box in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TmaSwizzle {
    /// Row-major box, rows `box[0]·elem` bytes apart.
    None,
    /// `CU_TENSOR_MAP_SWIZZLE_128B`: rows 128 bytes apart (the inner box is at most 128
    /// bytes), the 16-byte chunk j of the row at shared address `a` stored at chunk
    /// `j XOR ((a >> 7) & 7)` (the pattern of wgmma's 128-byte swizzle; the destination is
    /// 1024-byte aligned).
    B128,
}

/// A tiled tensor map (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorMapDesc {
    pub dtype: TmaDtype,
    /// Dimensions used (1..=5).
    pub rank: u32,
    /// The tensor's global address.
    pub address: u64,
    /// Dimensions, innermost first (elements).
    pub dims: [u64; 5],
    /// Byte strides of dimensions 1..rank (dimension 0 is contiguous).
    pub strides: [u64; 4],
    /// The box, innermost first (elements).
    pub box_dims: [u32; 5],
    pub swizzle: TmaSwizzle,
}

/// A tensor map the driver (and so the simulator) would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorMapError {
    #[error("tensor map: {0}")]
    Invalid(String),
    #[error("tensor map: not vidrt's simulator encoding ({0})")]
    Encoding(String),
}

impl TensorMapDesc {
    /// A 2-D map of a row-major `[rows, cols]` matrix at `address` (rows `cols·elem` bytes
    /// apart) with a `box_rows × box_cols` box.
    pub fn matrix_2d(
        dtype: TmaDtype,
        address: u64,
        (rows, cols): (u64, u64),
        (box_rows, box_cols): (u32, u32),
        swizzle: TmaSwizzle,
    ) -> Self {
        TensorMapDesc {
            dtype,
            rank: 2,
            address,
            dims: [cols, rows, 1, 1, 1],
            strides: [cols * u64::from(dtype.bytes()), 0, 0, 0],
            box_dims: [box_cols, box_rows, 1, 1, 1],
            swizzle,
        }
    }

    /// Bytes one copy of the box writes (and completes on its mbarrier), out-of-bounds
    /// elements included.
    pub fn box_bytes(&self) -> u32 {
        self.box_dims[..self.rank as usize].iter().product::<u32>() * self.dtype.bytes()
    }

    /// The inner box dimension in bytes (one shared row).
    pub fn row_bytes(&self) -> u32 {
        self.box_dims[0] * self.dtype.bytes()
    }

    /// The driver's rules for `cuTensorMapEncodeTiled` (see the module doc).
    pub fn check(&self) -> Result<(), TensorMapError> {
        let bad = |why: String| Err(TensorMapError::Invalid(why));
        let r = self.rank as usize;
        if !(1..=5).contains(&r) {
            return bad(format!("rank {r} (1..=5)"));
        }
        if !self.address.is_multiple_of(16) {
            return bad(format!("global address 0x{:x} is not 16-byte aligned", self.address));
        }
        if let Some(d) = self.dims[..r].iter().find(|&&d| d == 0 || d > 1 << 32) {
            return bad(format!("dimension {d} (1..=2^32)"));
        }
        if let Some(s) = self.strides[..r - 1].iter().find(|&&s| !s.is_multiple_of(16) || s >= 1 << 40) {
            return bad(format!("stride {s} bytes (a multiple of 16 below 2^40)"));
        }
        if let Some(b) = self.box_dims[..r].iter().find(|&&b| b == 0 || b > 256) {
            return bad(format!("box dimension {b} (1..=256)"));
        }
        if !self.row_bytes().is_multiple_of(16) {
            return bad(format!("inner box of {} bytes (a multiple of 16)", self.row_bytes()));
        }
        if self.swizzle == TmaSwizzle::B128 && self.row_bytes() > 128 {
            return bad(format!("inner box of {} bytes with the 128-byte swizzle (at most 128)", self.row_bytes()));
        }
        Ok(())
    }

    /// vidrt's simulator encoding (see the module doc).
    pub fn encode_sim(&self) -> [u8; 128] {
        let mut v = [0u8; 128];
        v[0..4].copy_from_slice(b"VTMA");
        v[4] = self.dtype.code();
        v[5] = self.rank as u8;
        v[6] = match self.swizzle {
            TmaSwizzle::None => 0,
            TmaSwizzle::B128 => 1,
        };
        v[8..16].copy_from_slice(&self.address.to_le_bytes());
        for (i, d) in self.dims.iter().enumerate() {
            v[16 + 8 * i..24 + 8 * i].copy_from_slice(&d.to_le_bytes());
        }
        for (i, s) in self.strides.iter().enumerate() {
            v[56 + 8 * i..64 + 8 * i].copy_from_slice(&s.to_le_bytes());
        }
        for (i, b) in self.box_dims.iter().enumerate() {
            v[88 + 4 * i..92 + 4 * i].copy_from_slice(&b.to_le_bytes());
        }
        v
    }

    /// Decodes [`TensorMapDesc::encode_sim`]'s form and checks it ([`TensorMapDesc::check`]).
    pub fn decode_sim(v: &[u8; 128]) -> Result<Self, TensorMapError> {
        if &v[0..4] != b"VTMA" {
            return Err(TensorMapError::Encoding("no VTMA magic".into()));
        }
        let dtype = TmaDtype::from_code(v[4]).ok_or_else(|| TensorMapError::Encoding(format!("dtype {}", v[4])))?;
        let swizzle = match v[6] {
            0 => TmaSwizzle::None,
            1 => TmaSwizzle::B128,
            s => return Err(TensorMapError::Encoding(format!("swizzle {s}"))),
        };
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&v[o..o + 8]);
            u64::from_le_bytes(w)
        };
        let u32_at = |o: usize| u32::from_le_bytes([v[o], v[o + 1], v[o + 2], v[o + 3]]);
        let d = TensorMapDesc {
            dtype,
            rank: u32::from(v[5]),
            address: u64_at(8),
            dims: std::array::from_fn(|i| u64_at(16 + 8 * i)),
            strides: std::array::from_fn(|i| u64_at(56 + 8 * i)),
            box_dims: std::array::from_fn(|i| u32_at(88 + 4 * i)),
            swizzle,
        };
        d.check()?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel's tensor-map arguments come from its maps in parameter order, with the
    /// buffer's address; other parameters have none; a map missing is an error.
    #[test]
    fn tensor_map_arguments_follow_the_parameter_order() {
        use crate::ptx::builder::{KernelBuilder, ParamTy};
        let a = TensorMapDesc::matrix_2d(TmaDtype::BF16, 0, (100, 72), (64, 64), TmaSwizzle::B128);
        let b = TensorMapDesc::matrix_2d(TmaDtype::F16, 0, (40, 64), (32, 64), TmaSwizzle::None);
        let mut kb = KernelBuilder::new("maps", "test");
        kb.param(ParamTy::Ptr);
        kb.tensor_map_param(a);
        kb.param(ParamTy::U32);
        kb.tensor_map_param(b);
        let mut k = kb.finish();
        assert_eq!(k.tensor_map_arg(0, 256), Ok(None));
        assert_eq!(k.tensor_map_arg(1, 256), Ok(Some(TensorMapDesc { address: 256, ..a })));
        assert_eq!(k.tensor_map_arg(2, 256), Ok(None));
        assert_eq!(k.tensor_map_arg(3, 512), Ok(Some(TensorMapDesc { address: 512, ..b })));
        assert_eq!(k.tensor_map_arg(9, 0), Ok(None));
        k.tensor_maps.pop();
        assert!(k.tensor_map_arg(3, 512).is_err());
    }

    #[test]
    fn the_simulator_encoding_round_trips_and_the_driver_rules_hold() {
        let d = TensorMapDesc::matrix_2d(TmaDtype::BF16, 1 << 40, (100, 72), (64, 64), TmaSwizzle::B128);
        assert_eq!(d.check(), Ok(()));
        assert_eq!(TensorMapDesc::decode_sim(&d.encode_sim()), Ok(d));
        assert_eq!(d.box_bytes(), 64 * 64 * 2);
        let mut e = d.encode_sim();
        e[0] = b'X';
        assert!(matches!(TensorMapDesc::decode_sim(&e), Err(TensorMapError::Encoding(_))));
        for bad in [
            TensorMapDesc { address: 8, ..d },
            TensorMapDesc { strides: [72 * 2 + 2, 0, 0, 0], ..d },
            TensorMapDesc { box_dims: [64, 257, 1, 1, 1], ..d },
            TensorMapDesc { box_dims: [4, 64, 1, 1, 1], ..d },
            TensorMapDesc { box_dims: [128, 64, 1, 1, 1], ..d },
            TensorMapDesc { rank: 0, ..d },
        ] {
            assert!(matches!(bad.check(), Err(TensorMapError::Invalid(_))), "{bad:?}");
        }
        // 256 bytes per row is fine without the swizzle.
        assert_eq!(TensorMapDesc { box_dims: [128, 64, 1, 1, 1], swizzle: TmaSwizzle::None, ..d }.check(), Ok(()));
    }
}
