//! The readable text form of a graph, which prints and parses back.
//!
//! ```text
//! vidrt.graph v1
//! %0 = input{name="x"}() : f32[2,3] "x"
//! %1 = weight{name="w"}() : f32[4,3] "w"
//! %2 = matmul{trans_a=false,trans_b=true,bias=false}(%0,%1) : f32[2,4] "proj"
//! out "y" = %2
//! ```
//! Node ids must count up from 0. Parsing re-runs inference and checks every printed shape.

use std::fmt::Write as _;

use crate::error::{IrError, Result};
use crate::op::{BinaryOp, Op, ReduceOp, RmsStyle, TrigPart, UnaryOp};
use crate::{DType, ElementwiseExpr, Graph, NodeId, Shape};

const HEADER: &str = "vidrt.graph v1";

#[derive(Clone, Debug, PartialEq)]
enum Attr {
    Int(u64),
    Float(f64),
    Bool(bool),
    Ints(Vec<u64>),
    Str(String),
    Word(String),
}

fn fmt_attr(a: &Attr, out: &mut String) {
    match a {
        Attr::Int(v) => write!(out, "{v}"),
        Attr::Float(v) => write!(out, "{v:?}"),
        Attr::Bool(v) => write!(out, "{v}"),
        Attr::Ints(v) => {
            out.push('[');
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{x}");
            }
            out.push(']');
            Ok(())
        }
        Attr::Str(s) => {
            quote(s, out);
            Ok(())
        }
        Attr::Word(w) => write!(out, "{w}"),
    }
    .unwrap_or(());
}

fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn ints<const N: usize>(v: &[usize; N]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x as u64).collect())
}

fn attrs(op: &Op) -> Vec<(&'static str, Attr)> {
    use Attr::*;
    match op {
        Op::Input { name } | Op::Weight { name } => vec![("name", Str(name.clone()))],
        Op::Constant { value } => vec![("value", Float(*value))],
        Op::RopeTable { grid, dims, theta, part } => vec![
            ("grid", ints(grid)),
            ("dims", ints(dims)),
            ("theta", Float(*theta)),
            ("part", Word(if *part == TrigPart::Cos { "cos" } else { "sin" }.into())),
        ],
        Op::RelPositionBucket { q_len, k_len, num_buckets, max_distance } => vec![
            ("q_len", Int(*q_len as u64)),
            ("k_len", Int(*k_len as u64)),
            ("num_buckets", Int(*num_buckets as u64)),
            ("max_distance", Int(*max_distance as u64)),
        ],
        Op::Unary(UnaryOp::AddScalar(c)) | Op::Unary(UnaryOp::MulScalar(c)) => vec![("c", Float(*c))],
        Op::Unary(UnaryOp::Clamp(lo, hi)) => vec![("lo", Float(*lo)), ("hi", Float(*hi))],
        Op::Unary(_) | Op::Binary(_) | Op::Modulate | Op::Rope | Op::Gather => vec![],
        Op::Cast { to } => vec![("to", Word(to.name().into()))],
        Op::MatMul { trans_a, trans_b, bias } => {
            vec![("trans_a", Bool(*trans_a)), ("trans_b", Bool(*trans_b)), ("bias", Bool(*bias))]
        }
        Op::Attention { scale, bias, mask } => {
            vec![("scale", Float(*scale)), ("bias", Bool(*bias)), ("mask", Bool(*mask))]
        }
        Op::Conv3d { stride, pad, bias } => vec![
            ("stride", ints(stride)),
            ("pad", Ints(pad.iter().flatten().map(|&x| x as u64).collect())),
            ("bias", Bool(*bias)),
        ],
        Op::RmsNorm { axis, eps, style, weight } => vec![
            ("axis", Int(*axis as u64)),
            ("eps", Float(*eps)),
            ("style", Word(if *style == RmsStyle::MeanSquare { "mean_square" } else { "l2_clamp" }.into())),
            ("weight", Bool(*weight)),
        ],
        Op::LayerNorm { eps, affine } => vec![("eps", Float(*eps)), ("affine", Bool(*affine))],
        Op::Softmax { axis } => vec![("axis", Int(*axis as u64))],
        Op::Reduce { op, axes, keepdim } => vec![
            ("op", Word(op.name().into())),
            ("axes", Ints(axes.iter().map(|&x| x as u64).collect())),
            ("keepdim", Bool(*keepdim)),
        ],
        Op::Reshape { shape } => vec![("shape", Ints(shape.0.iter().map(|&x| x as u64).collect()))],
        Op::Permute { perm } => vec![("perm", Ints(perm.iter().map(|&x| x as u64).collect()))],
        Op::Slice { axis, start, end } => {
            vec![("axis", Int(*axis as u64)), ("start", Int(*start as u64)), ("end", Int(*end as u64))]
        }
        Op::Concat { axis } => vec![("axis", Int(*axis as u64))],
        Op::Upsample { factors } => vec![("factors", ints(factors))],
        Op::TimestepEmbedding { dim, flip_sin_to_cos, downscale_freq_shift, max_period } => vec![
            ("dim", Int(*dim as u64)),
            ("flip_sin_to_cos", Bool(*flip_sin_to_cos)),
            ("downscale_freq_shift", Float(*downscale_freq_shift)),
            ("max_period", Float(*max_period)),
        ],
        Op::Fused { expr } => vec![("expr", Str(expr.to_text()))],
        Op::MatMulEpilogue { trans_a, trans_b, bias, epilogue } => vec![
            ("trans_a", Bool(*trans_a)),
            ("trans_b", Bool(*trans_b)),
            ("bias", Bool(*bias)),
            ("epilogue", Str(epilogue.to_text())),
        ],
        Op::Conv3dEpilogue { stride, pad, bias, epilogue } => vec![
            ("stride", ints(stride)),
            ("pad", Ints(pad.iter().flatten().map(|&x| x as u64).collect())),
            ("bias", Bool(*bias)),
            ("epilogue", Str(epilogue.to_text())),
        ],
        Op::LayerNormModulate { eps } => vec![("eps", Float(*eps))],
        Op::RmsNormRope { eps, heads } => vec![("eps", Float(*eps)), ("heads", Int(*heads as u64))],
        Op::RmsNormEpilogue { axis, eps, style, weight, epilogue } => vec![
            ("axis", Int(*axis as u64)),
            ("eps", Float(*eps)),
            ("style", Word(if *style == RmsStyle::MeanSquare { "mean_square" } else { "l2_clamp" }.into())),
            ("weight", Bool(*weight)),
            ("epilogue", Str(epilogue.to_text())),
        ],
    }
}

/// Prints `g` in the text form.
pub fn print(g: &Graph) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for (i, n) in g.nodes.iter().enumerate() {
        let _ = write!(out, "%{i} = {}", n.op.name());
        let a = attrs(&n.op);
        if !a.is_empty() {
            out.push('{');
            for (j, (k, v)) in a.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push('=');
                fmt_attr(v, &mut out);
            }
            out.push('}');
        }
        out.push('(');
        for (j, x) in n.inputs.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "{x}");
        }
        let _ = write!(out, ") : {}{}", n.dtype, n.shape);
        if !n.name.is_empty() {
            out.push(' ');
            quote(&n.name, &mut out);
        }
        out.push('\n');
    }
    for (name, id) in &g.outputs {
        out.push_str("out ");
        quote(name, &mut out);
        let _ = writeln!(out, " = {id}");
    }
    out
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T> {
        Err(IrError::Parse { line: self.line, msg: format!("{} (at column {})", msg.into(), self.pos + 1) })
    }
    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos] == b' ' {
            self.pos += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            self.err(format!("expected `{}`", c as char))
        }
    }
    fn word(&mut self) -> Result<String> {
        self.ws();
        let start = self.pos;
        while self.pos < self.s.len()
            && (self.s[self.pos].is_ascii_alphanumeric() || b"_.+-".contains(&self.s[self.pos]))
        {
            self.pos += 1;
        }
        if start == self.pos {
            return self.err("expected a word");
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }
    fn uint(&mut self) -> Result<u64> {
        let w = self.word()?;
        match w.parse() {
            Ok(v) => Ok(v),
            Err(_) => self.err(format!("`{w}` is not an unsigned integer")),
        }
    }
    fn string(&mut self) -> Result<String> {
        self.ws();
        if !self.eat(b'"') {
            return self.err("expected a string");
        }
        let mut out = Vec::new();
        loop {
            match self.s.get(self.pos) {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let c = match self.s.get(self.pos + 1) {
                        Some(b'n') => b'\n',
                        Some(b'"') => b'"',
                        Some(b'\\') => b'\\',
                        _ => return self.err("bad escape"),
                    };
                    out.push(c);
                    self.pos += 2;
                }
                Some(&c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        match String::from_utf8(out) {
            Ok(s) => Ok(s),
            Err(_) => self.err("string is not UTF-8"),
        }
    }
    fn node_ref(&mut self) -> Result<usize> {
        self.expect(b'%')?;
        let v = self.uint()?;
        // Node ids are u32: a larger reference is an error, never truncated onto another node.
        match u32::try_from(v) {
            Ok(id) => Ok(id as usize),
            Err(_) => self.err(format!("node reference %{v} is out of range")),
        }
    }
    fn attr(&mut self) -> Result<Attr> {
        self.ws();
        match self.s.get(self.pos) {
            Some(b'"') => Ok(Attr::Str(self.string()?)),
            Some(b'[') => {
                self.pos += 1;
                let mut v = Vec::new();
                if !self.eat(b']') {
                    loop {
                        v.push(self.uint()?);
                        if self.eat(b']') {
                            break;
                        }
                        self.expect(b',')?;
                    }
                }
                Ok(Attr::Ints(v))
            }
            _ => {
                let w = self.word()?;
                Ok(match w.as_str() {
                    "true" => Attr::Bool(true),
                    "false" => Attr::Bool(false),
                    _ if w.bytes().all(|c| c.is_ascii_digit()) => match w.parse() {
                        Ok(v) => Attr::Int(v),
                        Err(_) => return self.err(format!("integer `{w}` out of range")),
                    },
                    _ => match w.parse::<f64>() {
                        Ok(v) if w.bytes().any(|c| c.is_ascii_digit()) || w.contains("inf") || w == "NaN" => {
                            Attr::Float(v)
                        }
                        _ => Attr::Word(w),
                    },
                })
            }
        }
    }
    fn shape(&mut self) -> Result<Shape> {
        match self.attr()? {
            Attr::Ints(v) => Ok(Shape(v.into_iter().map(|x| x as usize).collect())),
            _ => self.err("expected a shape like [2,3]"),
        }
    }
}

struct Attrs {
    items: Vec<(String, Attr)>,
}

impl Attrs {
    fn take(&mut self, k: &str) -> std::result::Result<Attr, String> {
        let i = self.items.iter().position(|(n, _)| n == k).ok_or_else(|| format!("missing attribute `{k}`"))?;
        Ok(self.items.remove(i).1)
    }
    fn usize(&mut self, k: &str) -> std::result::Result<usize, String> {
        match self.take(k)? {
            Attr::Int(v) => usize::try_from(v).map_err(|_| format!("`{k}` too large")),
            a => Err(format!("`{k}` must be an integer, got {a:?}")),
        }
    }
    fn f64(&mut self, k: &str) -> std::result::Result<f64, String> {
        match self.take(k)? {
            Attr::Float(v) => Ok(v),
            Attr::Int(v) => Ok(v as f64),
            a => Err(format!("`{k}` must be a number, got {a:?}")),
        }
    }
    fn bool(&mut self, k: &str) -> std::result::Result<bool, String> {
        match self.take(k)? {
            Attr::Bool(v) => Ok(v),
            a => Err(format!("`{k}` must be true or false, got {a:?}")),
        }
    }
    fn string(&mut self, k: &str) -> std::result::Result<String, String> {
        match self.take(k)? {
            Attr::Str(v) => Ok(v),
            a => Err(format!("`{k}` must be a string, got {a:?}")),
        }
    }
    fn word(&mut self, k: &str) -> std::result::Result<String, String> {
        match self.take(k)? {
            Attr::Word(v) => Ok(v),
            a => Err(format!("`{k}` must be a word, got {a:?}")),
        }
    }
    fn list(&mut self, k: &str) -> std::result::Result<Vec<usize>, String> {
        match self.take(k)? {
            Attr::Ints(v) => {
                v.into_iter().map(|x| usize::try_from(x).map_err(|_| format!("`{k}` too large"))).collect()
            }
            a => Err(format!("`{k}` must be a list, got {a:?}")),
        }
    }
    fn arr<const N: usize>(&mut self, k: &str) -> std::result::Result<[usize; N], String> {
        let v = self.list(k)?;
        v.try_into().map_err(|_| format!("`{k}` must have {N} entries"))
    }
}

fn build_op(name: &str, a: &mut Attrs) -> std::result::Result<Op, String> {
    for u in UnaryOp::ALL {
        if u.name() == name {
            return Ok(Op::Unary(match u {
                UnaryOp::AddScalar(_) => UnaryOp::AddScalar(a.f64("c")?),
                UnaryOp::MulScalar(_) => UnaryOp::MulScalar(a.f64("c")?),
                UnaryOp::Clamp(_, _) => UnaryOp::Clamp(a.f64("lo")?, a.f64("hi")?),
                other => other,
            }));
        }
    }
    for b in BinaryOp::ALL {
        if b.name() == name {
            return Ok(Op::Binary(b));
        }
    }
    Ok(match name {
        "input" => Op::Input { name: a.string("name")? },
        "weight" => Op::Weight { name: a.string("name")? },
        "constant" => Op::Constant { value: a.f64("value")? },
        "rope_table" => Op::RopeTable {
            grid: a.arr("grid")?,
            dims: a.arr("dims")?,
            theta: a.f64("theta")?,
            part: match a.word("part")?.as_str() {
                "cos" => TrigPart::Cos,
                "sin" => TrigPart::Sin,
                w => return Err(format!("unknown part `{w}`")),
            },
        },
        "rel_position_bucket" => Op::RelPositionBucket {
            q_len: a.usize("q_len")?,
            k_len: a.usize("k_len")?,
            num_buckets: a.usize("num_buckets")?,
            max_distance: a.usize("max_distance")?,
        },
        "cast" => Op::Cast { to: a.word("to")?.parse().map_err(|e| format!("{e}"))? },
        "matmul" => Op::MatMul { trans_a: a.bool("trans_a")?, trans_b: a.bool("trans_b")?, bias: a.bool("bias")? },
        "attention" => Op::Attention { scale: a.f64("scale")?, bias: a.bool("bias")?, mask: a.bool("mask")? },
        "conv3d" => {
            let p: [usize; 6] = a.arr("pad")?;
            Op::Conv3d {
                stride: a.arr("stride")?,
                pad: [[p[0], p[1]], [p[2], p[3]], [p[4], p[5]]],
                bias: a.bool("bias")?,
            }
        }
        "rms_norm" => Op::RmsNorm {
            axis: a.usize("axis")?,
            eps: a.f64("eps")?,
            style: rms_style(&a.word("style")?)?,
            weight: a.bool("weight")?,
        },
        "rms_norm_epilogue" => Op::RmsNormEpilogue {
            axis: a.usize("axis")?,
            eps: a.f64("eps")?,
            style: rms_style(&a.word("style")?)?,
            weight: a.bool("weight")?,
            epilogue: ElementwiseExpr::parse(&a.string("epilogue")?)?,
        },
        "layer_norm" => Op::LayerNorm { eps: a.f64("eps")?, affine: a.bool("affine")? },
        "modulate" => Op::Modulate,
        "rope" => Op::Rope,
        "softmax" => Op::Softmax { axis: a.usize("axis")? },
        "reduce" => Op::Reduce {
            op: match a.word("op")?.as_str() {
                "sum" => ReduceOp::Sum,
                "mean" => ReduceOp::Mean,
                "max" => ReduceOp::Max,
                "min" => ReduceOp::Min,
                w => return Err(format!("unknown reduction `{w}`")),
            },
            axes: a.list("axes")?,
            keepdim: a.bool("keepdim")?,
        },
        "reshape" => Op::Reshape { shape: Shape(a.list("shape")?) },
        "permute" => Op::Permute { perm: a.list("perm")? },
        "slice" => Op::Slice { axis: a.usize("axis")?, start: a.usize("start")?, end: a.usize("end")? },
        "concat" => Op::Concat { axis: a.usize("axis")? },
        "upsample" => Op::Upsample { factors: a.arr("factors")? },
        "gather" => Op::Gather,
        "timestep_embedding" => Op::TimestepEmbedding {
            dim: a.usize("dim")?,
            flip_sin_to_cos: a.bool("flip_sin_to_cos")?,
            downscale_freq_shift: a.f64("downscale_freq_shift")?,
            max_period: a.f64("max_period")?,
        },
        "fused" => Op::Fused { expr: ElementwiseExpr::parse(&a.string("expr")?)? },
        "matmul_epilogue" => Op::MatMulEpilogue {
            trans_a: a.bool("trans_a")?,
            trans_b: a.bool("trans_b")?,
            bias: a.bool("bias")?,
            epilogue: ElementwiseExpr::parse(&a.string("epilogue")?)?,
        },
        "conv3d_epilogue" => {
            let p: [usize; 6] = a.arr("pad")?;
            Op::Conv3dEpilogue {
                stride: a.arr("stride")?,
                pad: [[p[0], p[1]], [p[2], p[3]], [p[4], p[5]]],
                bias: a.bool("bias")?,
                epilogue: ElementwiseExpr::parse(&a.string("epilogue")?)?,
            }
        }
        "layer_norm_modulate" => Op::LayerNormModulate { eps: a.f64("eps")? },
        "rms_norm_rope" => Op::RmsNormRope { eps: a.f64("eps")?, heads: a.usize("heads")? },
        other => return Err(format!("unknown op `{other}`")),
    })
}

fn rms_style(w: &str) -> std::result::Result<RmsStyle, String> {
    match w {
        "mean_square" => Ok(RmsStyle::MeanSquare),
        "l2_clamp" => Ok(RmsStyle::L2Clamp),
        w => Err(format!("unknown style `{w}`")),
    }
}

/// Parses the text form back into a graph, re-checking every node.
pub fn parse(text: &str) -> Result<Graph> {
    let mut g = Graph::new();
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    match lines.next() {
        Some((_, l)) if l.trim() == HEADER => {}
        Some((i, _)) => return Err(IrError::Parse { line: i + 1, msg: format!("expected the header `{HEADER}`") }),
        None => return Err(IrError::Parse { line: 1, msg: "empty input".into() }),
    }
    for (i, line) in lines {
        let mut c = Cursor { s: line.as_bytes(), pos: 0, line: i + 1 };
        c.ws();
        if line.trim_start().starts_with("out ") {
            c.word()?;
            let name = c.string()?;
            c.expect(b'=')?;
            let id = c.node_ref()?;
            g.set_output(name, NodeId(id as u32)).map_err(|e| IrError::Parse { line: i + 1, msg: e.to_string() })?;
            continue;
        }
        let id = c.node_ref()?;
        if id != g.len() {
            return c.err(format!("expected node %{}, found %{id}", g.len()));
        }
        c.expect(b'=')?;
        let opname = c.word()?;
        let mut attrs = Attrs { items: Vec::new() };
        if c.eat(b'{') && !c.eat(b'}') {
            loop {
                let k = c.word()?;
                c.expect(b'=')?;
                attrs.items.push((k, c.attr()?));
                if c.eat(b'}') {
                    break;
                }
                c.expect(b',')?;
            }
        }
        let op = match build_op(&opname, &mut attrs) {
            Ok(op) => op,
            Err(m) => return c.err(m),
        };
        if let Some((k, _)) = attrs.items.first() {
            return c.err(format!("unexpected attribute `{k}` for {opname}"));
        }
        c.expect(b'(')?;
        let mut inputs = Vec::new();
        if !c.eat(b')') {
            loop {
                inputs.push(NodeId(c.node_ref()? as u32));
                if c.eat(b')') {
                    break;
                }
                c.expect(b',')?;
            }
        }
        c.expect(b':')?;
        let dt = c.word()?;
        let dtype: DType = match dt.parse() {
            Ok(d) => d,
            Err(e) => return c.err(format!("{e}")),
        };
        let shape = c.shape()?;
        let name = if c.eat(b'"') {
            c.pos -= 1;
            c.string()?
        } else {
            String::new()
        };
        c.ws();
        if c.pos != c.s.len() {
            return c.err("trailing characters");
        }
        let declared = op.is_leaf().then(|| (shape.clone(), dtype));
        let nid = g.add_declared(op, &inputs, declared)?;
        let n = &mut g.nodes[nid.index()];
        if n.shape != shape || n.dtype != dtype {
            return Err(IrError::Mismatch {
                node: id,
                op: n.op.name(),
                name,
                stored: format!("{dtype}{shape}"),
                inferred: format!("{}{}", n.dtype, n.shape),
            });
        }
        n.name = name;
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_small_graph() {
        let mut g = Graph::new();
        let x = g.input("x", [2, 5, 8], DType::F32).unwrap();
        let w = g.weight("blk.w \"q\"", [4, 8], DType::F32).unwrap();
        let b = g.weight("blk.b", [4], DType::F32).unwrap();
        let y = g.linear(x, w, Some(b)).unwrap();
        let y = g.unary(UnaryOp::Clamp(-1e-6, 2.5), y).unwrap();
        g.push_scope("blk");
        g.named(y, "out");
        g.set_output("y", y).unwrap();
        let text = print(&g);
        let back = parse(&text).unwrap();
        assert_eq!(back.nodes, g.nodes);
        assert_eq!(back.outputs, g.outputs);
        assert_eq!(print(&back), text);
    }

    #[test]
    fn out_of_range_node_references_are_errors() {
        // %4294967296 used to be truncated to %0.
        let e =
            parse("vidrt.graph v1\n%0 = input{name=\"x\"}() : f32[2]\n%1 = silu(%4294967296) : f32[2]\n").unwrap_err();
        assert!(matches!(e, IrError::Parse { line: 3, .. }), "{e}");
        let e = parse("vidrt.graph v1\n%0 = input{name=\"x\"}() : f32[2]\nout \"y\" = %4294967296\n").unwrap_err();
        assert!(matches!(e, IrError::Parse { line: 3, .. }), "{e}");
    }

    #[test]
    fn overflowing_shapes_are_errors() {
        // Found by the `ir_text` fuzz target: a conv3d padding of u64::MAX overflowed in
        // shape inference.
        let e = parse(
            "vidrt.graph v1\n%0 = input{name=\"x\"}() : f32[1,1,1,2,2]\n%1 = weight{name=\"w\"}() : f32[1,1,1,1,1]\n\
             %2 = conv3d{stride=[1,1,1],pad=[0,0,0,0,0,18446744073709551615],bias=false}(%0,%1) : f32[1,1,1,2,2]\n",
        )
        .unwrap_err();
        assert!(matches!(e, IrError::Invalid { node: 2, .. }), "{e}");
        let e = parse("vidrt.graph v1\n%0 = input{name=\"x\"}() : f32[1,9223372036854775807]\n%1 = upsample{factors=[1,4]}(%0) : f32[1,1]\n")
            .unwrap_err();
        assert!(matches!(e, IrError::Invalid { node: 1, .. }), "{e}");
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = parse("vidrt.graph v1\n%0 = input{name=\"x\"}() : f32[2]\n%1 = bogus(%0) : f32[2]\n").unwrap_err();
        assert!(matches!(e, IrError::Parse { line: 3, .. }), "{e}");
        let e = parse("vidrt.graph v1\n%0 = input{name=\"x\"}() : f32[2]\n%1 = silu(%0) : f32[3]\n").unwrap_err();
        assert!(matches!(e, IrError::Mismatch { node: 1, .. }), "{e}");
    }
}
