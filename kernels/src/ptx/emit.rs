//! PTX text emission (ISA 8.0, for sm_80 and sm_90a). The tensor-core instructions
//! (`ldmatrix`, `cp.async`, `mma.sync` m16n8k16 bf16/f16, `cvt.rn.bf16x2.f32`) need sm_80;
//! `wgmma.*`, `fence.proxy.async`, `mbarrier.arrive.expect_tx`/`try_wait`,
//! `fence.mbarrier_init` and `cp.async.bulk.tensor` need sm_90a ([`try_emit`] rejects them
//! for sm_80). A [`ParamTy::TensorMap`] parameter is declared `.param .align 64 .b8 name[128]`
//! and its register is its generic address (`mov.u64` of the parameter-space address, then
//! `cvta.param.u64`), the tensor-map operand of the TMA copy.

use std::fmt::Write;

use super::builder::{BinOp, Guard, Inst, Kernel, Operand, ParamTy, RegClass, ShflMode, Target, Ty, UnOp, WgmmaA};

fn op(o: &Operand) -> String {
    match o {
        Operand::Reg(r) => r.to_string(),
        Operand::Int(v) => v.to_string(),
        Operand::F32(v) => format!("0f{:08X}", v.to_bits()),
    }
}

fn guard(g: &Option<Guard>) -> String {
    match g {
        Some(Guard { pred, negate: false }) => format!("@{pred} "),
        Some(Guard { pred, negate: true }) => format!("@!{pred} "),
        None => String::new(),
    }
}

/// The memory type suffix for a register's type.
fn mem_ty(ty: Ty) -> &'static str {
    match ty {
        Ty::F16 | Ty::BF16 | Ty::B16 => "b16",
        other => other.suffix(),
    }
}

fn regs(rs: &[super::builder::Reg]) -> String {
    if rs.len() == 1 {
        rs[0].to_string()
    } else {
        format!("{{{}}}", rs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "))
    }
}

fn vec_suffix(n: usize) -> String {
    if n == 1 {
        String::new()
    } else {
        format!(".v{n}")
    }
}

fn addr(a: &super::builder::Reg, off: i32) -> String {
    if off == 0 {
        format!("[{a}]")
    } else {
        format!("[{a}+{off}]")
    }
}

fn bin_name(o: BinOp, ty: Ty) -> String {
    let t = ty.suffix();
    let b = ty.bits_suffix();
    if ty.is_float() {
        let rn = ".rn";
        return match o {
            BinOp::Add => format!("add{rn}.{t}"),
            BinOp::Sub => format!("sub{rn}.{t}"),
            BinOp::Mul => format!("mul{rn}.{t}"),
            BinOp::Div => format!("div.rn.{t}"),
            BinOp::Min => format!("min.{t}"),
            BinOp::Max => format!("max.{t}"),
            BinOp::Rem | BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Shl | BinOp::Shr => format!("invalid.{t}"),
        };
    }
    match o {
        BinOp::Add => format!("add.{t}"),
        BinOp::Sub => format!("sub.{t}"),
        BinOp::Mul => format!("mul.lo.{t}"),
        BinOp::Div => format!("div.{t}"),
        BinOp::Rem => format!("rem.{t}"),
        BinOp::Min => format!("min.{t}"),
        BinOp::Max => format!("max.{t}"),
        BinOp::And => format!("and.{b}"),
        BinOp::Or => format!("or.{b}"),
        BinOp::Xor => format!("xor.{b}"),
        BinOp::Shl => format!("shl.{b}"),
        BinOp::Shr => format!("shr.{t}"),
    }
}

fn un_name(o: UnOp, ty: Ty) -> String {
    let t = ty.suffix();
    match o {
        UnOp::Neg => format!("neg.{t}"),
        UnOp::Abs => format!("abs.{t}"),
        UnOp::Sqrt => format!("sqrt.rn.{t}"),
        UnOp::Rsqrt => format!("rsqrt.approx.ftz.{t}"),
        UnOp::Rcp => format!("rcp.rn.{t}"),
        UnOp::Ex2 => format!("ex2.approx.ftz.{t}"),
        UnOp::Lg2 => format!("lg2.approx.ftz.{t}"),
        UnOp::Sin => format!("sin.approx.ftz.{t}"),
        UnOp::Cos => format!("cos.approx.ftz.{t}"),
        UnOp::Rni => format!("cvt.rni.{t}.{t}"),
        UnOp::Not => format!("not.{}", ty.bits_suffix()),
    }
}

fn cvt_name(dst: Ty, src: Ty) -> String {
    let (d, s) = (dst.suffix(), src.suffix());
    if dst == src {
        return format!("mov.{}", dst.bits_suffix());
    }
    let rnd = match (dst.is_float(), src.is_float()) {
        // Narrowing float conversions and int → float round to nearest even.
        (true, true) if dst.bytes() < src.bytes() => ".rn",
        (true, false) => ".rn",
        (false, true) => ".rzi",
        _ => "",
    };
    format!("cvt{rnd}.{d}.{s}")
}

/// An instruction the target does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel `{kernel}`: instruction {pc} (`{inst}`) needs {needs}; cannot emit it for {target}")]
pub struct TargetError {
    pub kernel: String,
    pub pc: usize,
    pub inst: &'static str,
    pub needs: &'static str,
    pub target: &'static str,
}

impl From<TargetError> for super::KernelError {
    fn from(e: TargetError) -> Self {
        super::KernelError::Unsupported(e.to_string())
    }
}

/// The name of `i` when only sm_90a has it (`wgmma.*`, `fence.proxy.async`), else `None`.
pub fn sm90a_only(i: &Inst) -> Option<&'static str> {
    match i {
        Inst::FenceProxyAsync => Some("fence.proxy.async"),
        Inst::WgmmaFence => Some("wgmma.fence"),
        Inst::WgmmaCommit => Some("wgmma.commit_group"),
        Inst::WgmmaWait { .. } => Some("wgmma.wait_group"),
        Inst::Wgmma { .. } => Some("wgmma.mma_async"),
        Inst::MbarArriveExpectTx { .. } => Some("mbarrier.arrive.expect_tx"),
        Inst::MbarTryWait { .. } => Some("mbarrier.try_wait"),
        Inst::FenceMbarrierInit => Some("fence.mbarrier_init"),
        Inst::TmaLoad { .. } => Some("cp.async.bulk.tensor"),
        Inst::SetMaxNReg { .. } => Some("setmaxnreg"),
        _ => None,
    }
}

/// Checks that `target` has every instruction of `k`: the first one it lacks is the error.
pub fn check_target(k: &Kernel, target: Target) -> Result<(), TargetError> {
    if target == Target::Sm90a {
        return Ok(());
    }
    match k.insts.iter().enumerate().find_map(|(pc, i)| sm90a_only(i).map(|n| (pc, n))) {
        Some((pc, inst)) => {
            Err(TargetError { kernel: k.name.clone(), pc, inst, needs: Target::Sm90a.name(), target: target.name() })
        }
        None => Ok(()),
    }
}

/// [`emit`] after [`check_target`]: the module text, or the instruction `target` lacks.
pub fn try_emit(k: &Kernel, target: Target) -> Result<String, TargetError> {
    check_target(k, target)?;
    Ok(emit(k, target))
}

/// Emits the module text of `k` for `target`. It does not check that the target has every
/// instruction (a `wgmma` kernel emitted for sm_80 gives text ptxas rejects): callers that
/// can meet such a kernel use [`try_emit`].
pub fn emit(k: &Kernel, target: Target) -> String {
    let mut s = String::new();
    for line in k.header.lines() {
        let _ = writeln!(s, "// {line}");
    }
    let _ = writeln!(s, ".version {}\n.target {}\n.address_size 64\n", target.ptx_version(), target.name());
    for t in &k.consts {
        let words: Vec<String> = t.words.iter().map(|w| format!("0x{w:08X}")).collect();
        let _ = writeln!(s, ".const .align 4 .b32 {}[{}] = {{{}}};", t.name, t.words.len().max(1), words.join(", "));
    }
    if k.dynamic_shared > 0 {
        // Sized by the launch (`Kernel::dynamic_shared` bytes).
        let _ = writeln!(s, ".extern .shared .align {} .b8 {}_smem[];", k.shared_align, k.name);
    }
    let params: Vec<String> = k
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            ParamTy::TensorMap => format!("\t.param .align 64 .b8 {}_param_{i}[128]", k.name),
            ParamTy::Ptr => format!("\t.param .u64 {}_param_{i}", k.name),
            ParamTy::U32 => format!("\t.param .u32 {}_param_{i}", k.name),
            ParamTy::F32 => format!("\t.param .f32 {}_param_{i}", k.name),
        })
        .collect();
    let _ = writeln!(s, ".visible .entry {}(\n{}\n)", k.name, params.join(",\n"));
    match k.block {
        // `__launch_bounds__(b, 1)`: without a minimum of blocks per SM ptxas may not fix
        // the register count at entry that `setmaxnreg` needs (CUTLASS and FlashAttention-3
        // declare both).
        Some(b) if k.uses_setmaxnreg() => {
            let _ = writeln!(s, ".reqntid {b}, 1, 1\n.minnctapersm 1");
        }
        Some(b) => {
            let _ = writeln!(s, ".maxntid {b}, 1, 1");
        }
        None => {}
    }
    s.push_str("{\n");
    for c in RegClass::ALL {
        let n = k.regs.iter().filter(|r| r.ty.class() == c).count();
        if n > 0 {
            let (p, t) = c.decl();
            let _ = writeln!(s, "\t.reg .{t} %{p}<{n}>;");
        }
    }
    if k.shared_bytes > 0 {
        let _ = writeln!(s, "\t.shared .align {} .b8 {}_smem[{}];", k.shared_align, k.name, k.shared_bytes);
    }
    for i in &k.insts {
        let line = match i {
            Inst::LdParam { dst, index } => match k.params.get(*index) {
                // The tensor map stays in the parameter space: its address, made generic by the
                // following `cvta.param`, is the operand.
                Some(ParamTy::TensorMap) => format!("mov.u64 {dst}, {}_param_{index};", k.name),
                p => {
                    let t = p.map_or("u64", |p| match p {
                        ParamTy::Ptr | ParamTy::TensorMap => "u64",
                        ParamTy::U32 => "u32",
                        ParamTy::F32 => "f32",
                    });
                    format!("ld.param.{t} {dst}, [{}_param_{index}];", k.name)
                }
            },
            Inst::Mov { dst, src } => {
                let t = if dst.ty.class() == RegClass::B16 { "b16" } else { dst.ty.suffix() };
                format!("mov.{t} {dst}, {};", op(src))
            }
            Inst::Bitcast { dst, src } => format!("mov.{} {dst}, {src};", dst.ty.bits_suffix()),
            Inst::Pack { dst, lo, hi } => format!("mov.b32 {dst}, {{{lo}, {hi}}};"),
            Inst::Prmt { dst, a, b, sel } => format!("prmt.b32 {dst}, {a}, {b}, {};", op(sel)),
            Inst::Unpack { lo, hi, src } => format!("mov.b32 {{{lo}, {hi}}}, {src};"),
            Inst::ReadSpecial { dst, sreg } => format!("mov.u32 {dst}, {};", sreg.name()),
            Inst::SharedBase { dst } => format!("mov.u32 {dst}, {}_smem;", k.name),
            Inst::ConstBase { dst, table } => {
                let name = k.consts.get(*table).map_or("missing_table", |t| t.name.as_str());
                format!("mov.u64 {dst}, {name};")
            }
            Inst::Ld { space, dst, addr: a, offset, guard: g } => format!(
                "{}ld.{}{}.{} {}, {};",
                guard(g),
                space.name(),
                vec_suffix(dst.len()),
                dst.first().map_or("b32", |r| mem_ty(r.ty)),
                regs(dst),
                addr(a, *offset)
            ),
            Inst::St { space, src, addr: a, offset, guard: g } => format!(
                "{}st.{}{}.{} {}, {};",
                guard(g),
                space.name(),
                vec_suffix(src.len()),
                src.first().map_or("b32", |r| mem_ty(r.ty)),
                addr(a, *offset),
                regs(src)
            ),
            Inst::Bin { op: o, dst, a, b } => format!("{} {dst}, {}, {};", bin_name(*o, dst.ty), op(a), op(b)),
            Inst::Un { op: o, dst, a } => format!("{} {dst}, {};", un_name(*o, dst.ty), op(a)),
            Inst::Fma { dst, a, b, c } => {
                let name = if dst.ty.is_float() {
                    format!("fma.rn.{}", dst.ty.suffix())
                } else {
                    format!("mad.lo.{}", dst.ty.suffix())
                };
                format!("{name} {dst}, {}, {}, {};", op(a), op(b), op(c))
            }
            Inst::MulWide { dst, a, b } => format!("mul.wide.u32 {dst}, {a}, {};", op(b)),
            Inst::Cvt { dst, src } => format!("{} {dst}, {src};", cvt_name(dst.ty, src.ty)),
            Inst::Setp { cmp, dst, a, b } => {
                let t = match a {
                    Operand::Reg(r) => r.ty,
                    _ => match b {
                        Operand::Reg(r) => r.ty,
                        _ => Ty::S32,
                    },
                };
                format!("setp.{}.{} {dst}, {}, {};", cmp.name(), t.suffix(), op(a), op(b))
            }
            Inst::Selp { dst, a, b, pred } => {
                let t = if dst.ty.class() == RegClass::B16 { "b16" } else { dst.ty.suffix() };
                format!("selp.{t} {dst}, {}, {}, {pred};", op(a), op(b))
            }
            Inst::Label(l) => {
                let _ = writeln!(s, "L{}:", l.0);
                continue;
            }
            Inst::Bra { target: t, guard: g } => {
                let uni = if g.is_none() { ".uni" } else { "" };
                format!("{}bra{uni} L{};", guard(g), t.0)
            }
            Inst::BarSync => "bar.sync 0;".to_string(),
            Inst::BarNamed { id, count, wait } => format!("bar.{} {id}, {count};", if *wait { "sync" } else { "arrive" }),
            Inst::Shfl { mode, dst, src, lane } => {
                let (m, c) = match mode {
                    ShflMode::Bfly => ("bfly", 31),
                    ShflMode::Down => ("down", 31),
                    ShflMode::Up => ("up", 0),
                    ShflMode::Idx => ("idx", 31),
                };
                format!("shfl.sync.{m}.b32 {dst}, {src}, {}, {c}, -1;", op(lane))
            }
            Inst::LdMatrix { trans, dst, addr: a } => format!(
                "ldmatrix.sync.aligned.m8n8.x{}{}.shared.b16 {{{}}}, [{a}];",
                dst.len(),
                if *trans { ".trans" } else { "" },
                dst.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
            ),
            Inst::CpAsync { cache, dst, src, size, src_size } => match src_size {
                Some(n) => format!("cp.async.{}.shared.global [{dst}], [{src}], {size}, {};", cache.name(), op(n)),
                None => format!("cp.async.{}.shared.global [{dst}], [{src}], {size};", cache.name()),
            },
            Inst::CpAsyncCommit => "cp.async.commit_group;".to_string(),
            Inst::CpAsyncWait { n } => format!("cp.async.wait_group {n};"),
            Inst::CpAsyncWaitAll => "cp.async.wait_all;".to_string(),
            Inst::Mma { ab, d, a, b, c } => {
                let t = ab.suffix();
                format!(
                    "mma.sync.aligned.m16n8k16.row.col.f32.{t}.{t}.f32 {}, {}, {}, {};",
                    regs(d),
                    regs(a),
                    regs(b),
                    regs(c)
                )
            }
            Inst::CvtPack { ty, dst, hi, lo } => format!("cvt.rn.{}x2.f32 {dst}, {hi}, {lo};", ty.suffix()),
            Inst::FenceProxyAsync => "fence.proxy.async.shared::cta;".to_string(),
            Inst::WgmmaFence => "wgmma.fence.sync.aligned;".to_string(),
            Inst::WgmmaCommit => "wgmma.commit_group.sync.aligned;".to_string(),
            Inst::WgmmaWait { n } => format!("wgmma.wait_group.sync.aligned {n};"),
            Inst::Wgmma { ab, n, d, a, b_desc, scale_d, trans_b } => {
                let t = ab.suffix();
                let d = d.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
                let tb = u8::from(*trans_b);
                // imm-scale-a = imm-scale-b = 1; imm-trans-a = 0 (K-major) for a descriptor A
                // (a register A has no imm-trans-a); imm-trans-b 1 reads B MN-major.
                match a {
                    WgmmaA::Desc(a_desc) => format!(
                        "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{t}.{t} {{{d}}}, {a_desc}, {b_desc}, {scale_d}, 1, 1, 0, {tb};"
                    ),
                    WgmmaA::Regs(a) => format!(
                        "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{t}.{t} {{{d}}}, {{{}, {}, {}, {}}}, {b_desc}, {scale_d}, 1, 1, {tb};",
                        a[0], a[1], a[2], a[3]
                    ),
                }
            }
            Inst::MbarInit { addr: a, count } => format!("mbarrier.init.shared::cta.b64 [{a}], {count};"),
            Inst::MbarArriveExpectTx { addr: a, tx } => {
                format!("mbarrier.arrive.expect_tx.shared::cta.b64 _, [{a}], {tx};")
            }
            Inst::MbarArrive { addr: a } => format!("mbarrier.arrive.shared::cta.b64 _, [{a}];"),
            Inst::MbarTryWait { dst, addr: a, parity } => {
                format!("mbarrier.try_wait.parity.shared::cta.b64 {dst}, [{a}], {};", op(parity))
            }
            Inst::FenceMbarrierInit => "fence.mbarrier_init.release.cluster;".to_string(),
            Inst::SetMaxNReg { inc, count } => {
                format!("setmaxnreg.{}.sync.aligned.u32 {count};", if *inc { "inc" } else { "dec" })
            }
            Inst::CvtaParam { dst, src } => format!("cvta.param.u64 {dst}, {src};"),
            Inst::TmaLoad { dst, tmap, coords, mbar } => format!(
                "cp.async.bulk.tensor.{}d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{dst}], [{tmap}, {{{}}}], [{mbar}];",
                coords.len(),
                coords.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
            ),
            Inst::NoUnroll => ".pragma \"nounroll\";".to_string(),
            Inst::Ret => "ret;".to_string(),
        };
        let _ = writeln!(s, "\t{line}");
    }
    s.push_str("}\n");
    s
}

/// A stable 64-bit hash of a kernel's text (FNV-1a), for module caches and tuning keys.
pub fn text_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
