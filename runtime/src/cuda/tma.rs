//! TMA tensor maps on CUDA: a kernel's [`TensorMapDesc`] (with the operand's device address)
//! encoded by the driver's `cuTensorMapEncodeTiled` into the opaque 128-byte `CUtensorMap` the
//! launch passes by value. **Not run on a GPU yet** (only the TMA-fed `matmul_wgmma_tma` uses
//! it, behind the wgmma opt-in): the simulator checks the kernels against vidrt's own encoding
//! of the same description.

use cudarc::driver::sys::{self as cusys, CUtensorMap};
use vidrt_kernels::ptx::tma::{TensorMapDesc, TmaDtype, TmaSwizzle};

use crate::RuntimeError;

/// The driver's tensor map for `desc` (row-major tiles, element strides 1, no interleave, L2
/// promotion of 128 bytes, out-of-bounds elements zero). The description is checked first
/// against the driver's documented rules ([`TensorMapDesc::check`]); a refusal by the driver
/// is a [`RuntimeError::Device`] naming the map.
pub(super) fn encode(desc: &TensorMapDesc, what: &str) -> Result<CUtensorMap, RuntimeError> {
    desc.check().map_err(|e| RuntimeError::Device(format!("{what}: {e}")))?;
    let dtype = match desc.dtype {
        TmaDtype::BF16 => cusys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        TmaDtype::F16 => cusys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        TmaDtype::F32 => cusys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
    };
    let swizzle = match desc.swizzle {
        TmaSwizzle::None => cusys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
        TmaSwizzle::B128 => cusys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
    };
    let rank = desc.rank as usize;
    let dims: Vec<u64> = desc.dims[..rank].to_vec();
    let strides: Vec<u64> = desc.strides[..rank - 1].to_vec();
    let boxes: Vec<u32> = desc.box_dims[..rank].to_vec();
    let ones = vec![1u32; rank];
    let mut map = CUtensorMap { opaque: [0; 16] };
    // SAFETY: the arrays hold `rank` dimensions, box sizes and element strides and `rank - 1`
    // strides, as the driver reads them; `map` is written by the driver; the global address
    // is only recorded (the driver reads no device memory here).
    let code = unsafe {
        cusys::cuTensorMapEncodeTiled(
            &mut map,
            dtype,
            desc.rank,
            desc.address as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            ones.as_ptr(),
            cusys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            cusys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            cusys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if code != cusys::CUresult::CUDA_SUCCESS {
        return Err(RuntimeError::Device(format!(
            "CUDA driver: cuTensorMapEncodeTiled for {what} ({desc:?}): {code:?}"
        )));
    }
    Ok(map)
}
