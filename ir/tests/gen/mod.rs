//! Random graphs for the pass property tests: DiT-like pieces (linear with bias, layer norm
//! with modulate, RMS norm with rope across heads, gated residuals), elementwise chains with
//! broadcasting, bf16 cast sections, constants (fold fodder), repeated instructions (CSE
//! fodder), dead branches (DCE fodder) and extra named outputs. Shared by `ir/tests` and the
//! root package's CPU tests (`#[path]`).

#![allow(dead_code)]

use vidrt_ir::{BinaryOp, DType, Graph, NodeId, Result, RmsStyle, TrigPart, UnaryOp};

/// Batch, tokens, channels, heads, head dim of the generated graphs.
pub const B: usize = 2;
pub const S: usize = 3;
pub const C: usize = 12;
pub const H: usize = 2;
pub const HD: usize = 6;

/// One instruction: (kind, operand pick, parameter pick).
pub type Instr = (u8, u32, u32);

/// Unary functions that stay bounded on bounded inputs.
const SAFE_UNARY: [UnaryOp; 11] = [
    UnaryOp::Neg,
    UnaryOp::Abs,
    UnaryOp::Tanh,
    UnaryOp::Sigmoid,
    UnaryOp::Silu,
    UnaryOp::GeluTanh,
    UnaryOp::Sin,
    UnaryOp::Cos,
    UnaryOp::AddScalar(0.25),
    UnaryOp::MulScalar(0.5),
    UnaryOp::Clamp(-1.0, 1.0),
];

const BINARY: [BinaryOp; 5] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Max, BinaryOp::Min];

/// Builds a graph from instructions. Inputs: `x` `[B,S,C]`, `mod` `[B,1,C]`; weights
/// `w` `[C,C]`, `b` `[C]`, `g` `[C]`. Every value node has shape `[B,S,C]` and dtype f32 (bf16
/// only inside cast sections). Output `y` is the last value; `keep_k` outputs as instructed.
pub fn build(instrs: &[Instr]) -> Result<Graph> {
    let mut g = Graph::new();
    let x = g.input("x", [B, S, C], DType::F32)?;
    let m = g.input("mod", [B, 1, C], DType::F32)?;
    let w = g.weight("w", [C, C], DType::F32)?;
    let bias = g.weight("b", [C], DType::F32)?;
    let gamma = g.weight("g", [C], DType::F32)?;
    let cos = g.rope_table([S, 1, 1], [2, 2, 2], 10000.0, TrigPart::Cos)?;
    let sin = g.rope_table([S, 1, 1], [2, 2, 2], 10000.0, TrigPart::Sin)?;
    let mut vals: Vec<NodeId> = vec![x];
    let mut kept = 0;
    let mut last: Option<Instr> = None;
    for &ins in instrs {
        let (kind, pick, param) = if ins.0 % 13 == 12 { last.unwrap_or(ins) } else { ins };
        let a = vals[pick as usize % vals.len()];
        let other = vals[(param as usize / 7) % vals.len()];
        let v = match kind % 13 {
            0 | 1 => g.unary(SAFE_UNARY[param as usize % SAFE_UNARY.len()], a)?,
            2 | 3 => {
                let op = BINARY[param as usize % BINARY.len()];
                if param % 3 == 0 {
                    g.binary(op, a, m)?
                } else {
                    g.binary(op, a, other)?
                }
            }
            4 => {
                let s = g.slice(m, 2, 0, C)?;
                g.modulate(a, s, m)?
            }
            5 => {
                let n = g.layer_norm(a, None, 1e-6)?;
                g.modulate(n, m, other)?
            }
            6 => {
                let n = g.rms_norm(a, Some(gamma), 2, 1e-6, RmsStyle::MeanSquare)?;
                let r = g.reshape(n, [B, S, H, HD])?;
                let r = g.rope(r, cos, sin)?;
                g.reshape(r, [B, S, C])?
            }
            7 => {
                let scaled = g.unary(UnaryOp::MulScalar(0.3), a)?;
                let y = g.linear(scaled, w, Some(bias))?;
                match param % 3 {
                    0 => g.gelu_tanh(y)?,
                    1 => {
                        let gated = g.mul(y, m)?;
                        g.add_(other, gated)?
                    }
                    _ => y,
                }
            }
            8 => {
                let c = g.constant(if param % 2 == 0 { 1.0 } else { 0.0 }, [1], DType::F32)?;
                let k = g.constant(0.5, [C], DType::F32)?;
                let k = g.unary(UnaryOp::Square, k)?;
                let y = if param % 2 == 0 { g.mul(a, c)? } else { g.add_(c, a)? };
                g.add_(y, k)?
            }
            9 => {
                let h = g.cast(a, DType::BF16)?;
                let h = g.silu(h)?;
                let h = g.unary(UnaryOp::MulScalar(0.75), h)?;
                g.cast(h, DType::F32)?
            }
            10 => {
                // A dead branch, then a named output of the current value.
                let _dead = g.unary(UnaryOp::Tanh, a)?;
                if kept < 4 {
                    g.set_output(format!("keep_{kept}"), a)?;
                    kept += 1;
                }
                a
            }
            _ => {
                let r = g.reshape(a, [B * S, C])?;
                let r = g.unary(UnaryOp::Sigmoid, r)?;
                g.reshape(r, [B, S, C])?
            }
        };
        last = Some(ins);
        vals.push(v);
    }
    let y = *vals.last().unwrap_or(&x);
    g.set_output("y", y)?;
    Ok(g)
}
