//! Data movement: strided copies (permute, slice, concat parts, reshape, casts), fills,
//! nearest-exact upsampling and embedding gathers.
//!
//! - Layouts: row-major tensors; each copy walks generation-time (dims, strides) on both sides.
//! - Launch: 1-D, one thread per element, `block` threads per block.
//! - Tunable: `block` ∈ {64, 128, 256, 512}.
//! - Same-dtype copies move raw bits (exact for every dtype); casts go through f32 with
//!   round-to-nearest-even into floats, and through i64 (truncating, saturating) into integers,
//!   as the CPU reference does.

use vidrt_ir::DType;

use super::common::{bits_ty, elem_ty, global_index, guard_lt, offset_of, to_f32, u32_of};
use crate::ptx::builder::{BinOp, Kernel, KernelBuilder, Operand, ParamTy, Space, Ty};
use crate::ptx::KernelError;

/// Generation-time parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyParams {
    pub block: u32,
}

/// Every parameter point.
pub fn param_space() -> Vec<CopyParams> {
    [64, 128, 256, 512].into_iter().map(|block| CopyParams { block }).collect()
}

/// One side of a strided copy: element offset `base + Σ coord·stride`.
#[derive(Clone, Debug, PartialEq)]
pub struct Walk {
    pub base: usize,
    pub strides: Vec<usize>,
}

fn start(name: &str, header: String, p: CopyParams, n: usize) -> Result<(KernelBuilder, u32), KernelError> {
    let n = u32_of(n, "elements")?;
    let mut b = KernelBuilder::new(name, header);
    b.block(p.block);
    Ok((b, n))
}

/// Copies the `dims`-shaped iteration space from `src` to `dst` (params: src, dst),
/// converting `src_dtype` to `dst_dtype` when they differ (floats only).
pub fn strided_copy(
    name: &str,
    dims: &[usize],
    src: &Walk,
    dst: &Walk,
    src_dtype: DType,
    dst_dtype: DType,
    p: CopyParams,
) -> Result<Kernel, KernelError> {
    let n: usize = dims.iter().product();
    let header = format!(
        "copy {name}: {src_dtype} -> {dst_dtype} over {dims:?}; src base {} strides {:?}; dst base {} strides {:?}\n1-D launch, one thread per element; params block={}",
        src.base, src.strides, dst.base, dst.strides, p.block
    );
    let (mut b, n) = start(name, header, p, n)?;
    let sp = b.param(ParamTy::Ptr);
    let dp = b.param(ParamTy::Ptr);
    let exit = b.label();
    let t = global_index(&mut b);
    guard_lt(&mut b, t, n, exit);
    let so = offset_of(&mut b, t, dims, &src.strides)?;
    let so = b.bin(BinOp::Add, Ty::U32, so, Operand::Int(i64::from(u32_of(src.base, "offset")?)));
    let doff = offset_of(&mut b, t, dims, &dst.strides)?;
    let doff = b.bin(BinOp::Add, Ty::U32, doff, Operand::Int(i64::from(u32_of(dst.base, "offset")?)));
    let (st, dt) = if src_dtype == dst_dtype {
        (bits_ty(src_dtype), bits_ty(dst_dtype))
    } else {
        (elem_ty(src_dtype), elem_ty(dst_dtype))
    };
    let sa = b.addr(sp, so, st.bytes());
    let v = b.ld(Space::Global, st, sa);
    let v = if st == dt {
        v
    } else if dst_dtype.is_float() {
        // Through f32, as the reference: int → f32 rounds to nearest, then narrows.
        let f = to_f32(&mut b, v);
        if dt == Ty::F32 {
            f
        } else {
            b.cvt(dt, f)
        }
    } else {
        // Float → i64 truncates and saturates (NaN → 0); i64 → i32 wraps.
        let wide = if src_dtype.is_float() {
            let f = to_f32(&mut b, v);
            b.cvt(Ty::S64, f)
        } else if st == Ty::S64 {
            v
        } else {
            b.cvt(Ty::S64, v)
        };
        if dt == Ty::S64 {
            wide
        } else {
            b.cvt(dt, wide)
        }
    };
    let da = b.addr(dp, doff, dt.bytes());
    b.st(Space::Global, da, v);
    b.place(exit);
    Ok(b.finish())
}

/// Fills `n` elements of `dtype` with the bit pattern of `value` (param: dst).
pub fn fill(name: &str, n: usize, dtype: DType, value: f64, p: CopyParams) -> Result<Kernel, KernelError> {
    let bits: i64 = match dtype {
        DType::F32 => i64::from((value as f32).to_bits()),
        DType::F16 => i64::from(half::f16::from_f64(value).to_bits()),
        DType::BF16 => i64::from(half::bf16::from_f64(value).to_bits()),
        DType::I32 => i64::from((value as i32) as u32),
        DType::I64 => value as i64,
    };
    let header =
        format!("fill {name}: {n} x {dtype} = {value}\n1-D launch, one thread per element; params block={}", p.block);
    let (mut b, n) = start(name, header, p, n)?;
    let dp = b.param(ParamTy::Ptr);
    let exit = b.label();
    let t = global_index(&mut b);
    guard_lt(&mut b, t, n, exit);
    let ty = bits_ty(dtype);
    let v = b.mov(ty, Operand::Int(bits));
    let a = b.addr(dp, t, ty.bytes());
    b.st(Space::Global, a, v);
    b.place(exit);
    Ok(b.finish())
}

/// Nearest-exact upsampling of the last two axes of `[.., H, W]` by integer factors
/// (params: x, out).
pub fn upsample(
    name: &str,
    in_dims: &[usize],
    factors: [usize; 2],
    dtype: DType,
    p: CopyParams,
) -> Result<Kernel, KernelError> {
    let r = in_dims.len();
    if r < 2 || factors[0] == 0 || factors[1] == 0 {
        return Err(KernelError::Invalid("upsample needs rank ≥ 2 and non-zero factors".into()));
    }
    let (h, w) = (in_dims[r - 2], in_dims[r - 1]);
    let (oh, ow) = (h * factors[0], w * factors[1]);
    let outer: usize = in_dims[..r - 2].iter().product();
    let n = outer * oh * ow;
    let header = format!(
        "upsample {name}: nearest-exact x{factors:?} of {dtype}{in_dims:?}\n1-D launch, one thread per output element; params block={}",
        p.block
    );
    let (mut b, n) = start(name, header, p, n)?;
    let sp = b.param(ParamTy::Ptr);
    let dp = b.param(ParamTy::Ptr);
    let exit = b.label();
    let t = global_index(&mut b);
    guard_lt(&mut b, t, n, exit);
    let imm = |v: usize| -> Result<Operand, KernelError> { Ok(Operand::Int(i64::from(u32_of(v, "size")?))) };
    let ox = b.bin(BinOp::Rem, Ty::U32, t, imm(ow)?);
    let rest = b.bin(BinOp::Div, Ty::U32, t, imm(ow)?);
    let oy = b.bin(BinOp::Rem, Ty::U32, rest, imm(oh)?);
    let o = b.bin(BinOp::Div, Ty::U32, rest, imm(oh)?);
    let ix = b.bin(BinOp::Div, Ty::U32, ox, imm(factors[1])?);
    let iy = b.bin(BinOp::Div, Ty::U32, oy, imm(factors[0])?);
    let row = b.fma(Ty::U32, o, imm(h)?, iy);
    let si = b.fma(Ty::U32, row, imm(w)?, ix);
    let ty = bits_ty(dtype);
    let sa = b.addr(sp, si, ty.bytes());
    let v = b.ld(Space::Global, ty, sa);
    let da = b.addr(dp, t, ty.bytes());
    b.st(Space::Global, da, v);
    b.place(exit);
    Ok(b.finish())
}

/// Embedding gather: `out[r, e] = table[ids[r], e]` for a `[V, D]` table (params: table, ids,
/// out). Ids outside `0..V` read row 0 and set nothing else (the caller validates ids).
pub fn gather(
    name: &str,
    vocab: usize,
    d: usize,
    n_ids: usize,
    table_dtype: DType,
    ids_dtype: DType,
    p: CopyParams,
) -> Result<Kernel, KernelError> {
    if ids_dtype.is_float() {
        return Err(KernelError::Unsupported(format!("gather ids of {ids_dtype}")));
    }
    let header = format!(
        "gather {name}: table {table_dtype}[{vocab}, {d}], {n_ids} ids of {ids_dtype}\n1-D launch, one thread per output element; ids out of range are clamped to row 0; params block={}",
        p.block
    );
    let (mut b, n) = start(name, header, p, n_ids * d)?;
    let tp = b.param(ParamTy::Ptr);
    let ip = b.param(ParamTy::Ptr);
    let dp = b.param(ParamTy::Ptr);
    let exit = b.label();
    let t = global_index(&mut b);
    guard_lt(&mut b, t, n, exit);
    let dd = Operand::Int(i64::from(u32_of(d, "embedding width")?));
    let e = b.bin(BinOp::Rem, Ty::U32, t, dd);
    let r = b.bin(BinOp::Div, Ty::U32, t, dd);
    let it = elem_ty(ids_dtype);
    let ia = b.addr(ip, r, it.bytes());
    let id = b.ld(Space::Global, it, ia);
    let id64 = if it == Ty::S64 { id } else { b.cvt(Ty::S64, id) };
    // Unsigned compare: negative ids are huge.
    let idu = b.bitcast(Ty::U64, id64);
    let bad = b.setp(crate::ptx::builder::Cmp::Ge, idu, Operand::Int(vocab as i64));
    let id32 = b.cvt(Ty::U32, idu);
    let zero = b.imm_u32(0);
    let row = b.selp(Ty::U32, zero, id32, bad);
    let si = b.fma(Ty::U32, row, dd, e);
    let ty = bits_ty(table_dtype);
    let sa = b.addr(tp, si, ty.bytes());
    let v = b.ld(Space::Global, ty, sa);
    let da = b.addr(dp, t, ty.bytes());
    b.st(Space::Global, da, v);
    b.place(exit);
    Ok(b.finish())
}

/// The (grid, block) of [`transpose`] for `batch` matrices of `rows`×`cols`.
pub fn transpose_launch_dims(batch: usize, rows: usize, cols: usize) -> Result<(u32, u32), KernelError> {
    let tiles = batch.saturating_mul(rows.div_ceil(TILE)).saturating_mul(cols.div_ceil(TILE));
    Ok((u32_of(tiles, "transpose blocks")?, TRANSPOSE_THREADS))
}

/// [`transpose`]'s square tile.
const TILE: usize = 32;
/// [`transpose`]'s threads: 32 × 8, each moving 4 elements of a tile.
const TRANSPOSE_THREADS: u32 = 256;

/// `out[i, c, r] = x[i, r, c]` for `batch` row-major `rows`×`cols` matrices of `dtype`
/// (params: x, out): raw bits, through a 32×32 shared tile so that both the reads (along a
/// row of x) and the writes (along a row of out) are consecutive per warp. The tile's rows
/// are 33 words, so the column reads hit 32 different banks. What turns a conv input `[B,
/// Cin, T·H·W]` channels-last (`[B, T·H·W, Cin]`) and a weight `[Cout, Cin, taps]` into `[Cout,
/// taps, Cin]`. Launch: [`transpose_launch_dims`].
pub fn transpose(name: &str, batch: usize, rows: usize, cols: usize, dtype: DType) -> Result<Kernel, KernelError> {
    use crate::ptx::builder::{Cmp, Guard, Inst, Reg, Special};
    let (grid, block) = transpose_launch_dims(batch, rows, cols)?;
    let header = format!(
        "transpose {name}: {batch} x [{rows}, {cols}] -> [{cols}, {rows}] of {dtype}\n\
         1-D grid of batch*ceil(rows/32)*ceil(cols/32) = {grid} blocks of {block} threads, one 32x33-word shared tile"
    );
    let (ru, cu) = (u32_of(rows, "rows")?, u32_of(cols, "cols")?);
    u32_of(batch.saturating_mul(rows).saturating_mul(cols), "transpose elements")?;
    let (tiles_r, tiles_c) = (ru.div_ceil(TILE as u32), cu.div_ceil(TILE as u32));
    let mut b = KernelBuilder::new(name, header);
    b.block(block);
    let sp = b.param(ParamTy::Ptr);
    let dp = b.param(ParamTy::Ptr);
    let ty = bits_ty(dtype);
    let imm = |v: u32| Operand::Int(i64::from(v));
    // One element per 4-byte word (8 bytes for 64-bit types), rows of 33 slots.
    let slot = ty.bytes().max(4);
    let tile = b.shared(33 * 32 * slot);
    let base = b.shared_base();
    let base = b.bin(BinOp::Add, Ty::U32, base, imm(tile));
    let tid = b.special(Special::TidX);
    let tx = b.bin(BinOp::And, Ty::U32, tid, imm(31));
    let tyy = b.bin(BinOp::Shr, Ty::U32, tid, imm(5));
    let blk = b.special(Special::CtaidX);
    let item = b.bin(BinOp::Div, Ty::U32, blk, imm(tiles_r * tiles_c));
    let rest = b.bin(BinOp::Rem, Ty::U32, blk, imm(tiles_r * tiles_c));
    let tr = b.bin(BinOp::Div, Ty::U32, rest, imm(tiles_c));
    let tc = b.bin(BinOp::Rem, Ty::U32, rest, imm(tiles_c));
    let r0 = b.bin(BinOp::Mul, Ty::U32, tr, imm(TILE as u32));
    let c0 = b.bin(BinOp::Mul, Ty::U32, tc, imm(TILE as u32));
    let item0 = b.bin(BinOp::Mul, Ty::U32, item, imm(ru * cu));
    let word = |b: &mut KernelBuilder, row: Reg, col: Reg| {
        let w = b.fma(Ty::U32, row, imm(33), col);
        b.fma(Ty::U32, w, imm(slot), base)
    };
    // Tile row j = ty + 8i holds x's row r0 + j, columns c0..c0+32 (each lane one column).
    let c = b.bin(BinOp::Add, Ty::U32, c0, tx);
    let c_ok = b.setp(Cmp::Lt, c, imm(cu));
    for i in 0..4u32 {
        let j = b.bin(BinOp::Add, Ty::U32, tyy, imm(8 * i));
        let r = b.bin(BinOp::Add, Ty::U32, r0, j);
        let r_ok = b.setp(Cmp::Lt, r, imm(ru));
        let ok = b.bin(BinOp::And, Ty::Pred, r_ok, c_ok);
        let idx = b.fma(Ty::U32, r, imm(cu), c);
        let idx = b.bin(BinOp::Add, Ty::U32, idx, item0);
        let ad = b.addr(sp, idx, ty.bytes());
        let v = super::common::ld_or_zero(&mut b, Space::Global, ty, ad, 1, Some(ok))[0];
        let at = word(&mut b, j, tx);
        b.st(Space::Shared, at, v);
    }
    b.bar_sync();
    // Out row c0 + j (= x's column), columns r0..r0+32: tile column j, row = lane.
    let r = b.bin(BinOp::Add, Ty::U32, r0, tx);
    let r_ok = b.setp(Cmp::Lt, r, imm(ru));
    for i in 0..4u32 {
        let j = b.bin(BinOp::Add, Ty::U32, tyy, imm(8 * i));
        let c = b.bin(BinOp::Add, Ty::U32, c0, j);
        let c_ok = b.setp(Cmp::Lt, c, imm(cu));
        let ok = b.bin(BinOp::And, Ty::Pred, r_ok, c_ok);
        let at = word(&mut b, tx, j);
        let v = b.ld(Space::Shared, ty, at);
        let idx = b.fma(Ty::U32, c, imm(ru), r);
        let idx = b.bin(BinOp::Add, Ty::U32, idx, item0);
        let ad = b.addr(dp, idx, ty.bytes());
        b.push(Inst::St {
            space: Space::Global,
            src: vec![v],
            addr: ad,
            offset: 0,
            guard: Some(Guard { pred: ok, negate: false }),
        });
    }
    Ok(b.finish())
}
