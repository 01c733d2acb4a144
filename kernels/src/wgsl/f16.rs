//! f16 storage for any generated kernel: [`retype`] rewrites a kernel written for f32
//! bindings so that chosen inputs are `array<f16>` and, optionally, so is its output.
//!
//! - A read `x[i]` of a retyped input becomes `f32(x[i])` (exact), so the kernel's
//!   arithmetic and accumulation stay f32 whatever its storage.
//! - A write `out[i] = e;` to a retyped output becomes `out[i] = vd_to_f16(e);`: round to
//!   nearest, ties to even, overflow to ±∞, NaN kept — computed on the f32 bits first,
//!   because WGSL leaves the rounding direction of an inexact `f32 → f16` conversion to the
//!   implementation. A read
//!   of a retyped output is widened like an input read.
//! - The module gains `enable f16;` and the kernel `Features::f16`; the entry point's dtype
//!   suffix becomes `_f16`.
//!
//! The rewrite works on the text the generators of this module emit: bindings declared by
//! `bindings`, every access to a binding written `name[index]`, every write a statement
//! `name[index] = expression;`. Anything else (a binding of another element type, a kernel
//! without the declaration) is a [`WgslError::BadParams`], never a silently wrong shader.

use super::{Elem, WgslError, WgslKernel};

/// Exact f32 → f16 rounding (ties to even): the rounding is done on the f32 bits
/// (`vd_round_f16` of [`super::elementwise::ROUNDING`]: overflow to ±∞, NaN kept), so the
/// conversion itself only meets values f16 represents exactly, where WGSL defines it.
pub const TO_F16: &str = r#"
fn vd_to_f16(x: f32) -> f16 {
    return f16(vd_round_f16(x));
}
"#;

fn bad(k: &WgslKernel, reason: String) -> WgslError {
    WgslError::BadParams { kernel: k.entry.clone(), reason }
}

/// The name declared at binding `binding` with element type `elem`, and the declaration's
/// byte range in `src`.
fn declared(src: &str, binding: usize, elem: Elem) -> Option<(String, std::ops::Range<usize>)> {
    let head = format!("@group(0) @binding({binding}) var<storage, ");
    let start = src.find(&head)?;
    let end = start + src[start..].find(";\n")? + 2;
    let decl = &src[start..end];
    let name = decl.split("> ").nth(1)?.split(':').next()?.trim().to_string();
    decl.ends_with(&format!(": array<{}>;\n", elem.wgsl())).then_some((name, start..end))
}

/// The index of the `]` closing the `[` at `open`.
fn closing(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &c) in b.iter().enumerate().skip(open) {
        match c {
            b'[' | b'(' => depth += 1,
            b']' | b')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return (c == b']').then_some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The end (exclusive) of the expression starting at `from`: the `;` at depth 0.
fn statement_end(b: &[u8], from: usize) -> Option<usize> {
    let mut depth = 0i64;
    for (i, &c) in b.iter().enumerate().skip(from) {
        match c {
            b'[' | b'(' => depth += 1,
            b']' | b')' => depth -= 1,
            b';' if depth == 0 => return Some(i),
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    None
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Rewrites the accesses in `body` to the bindings named in `reads` (widened on load) and
/// to `write` (rounded on store).
fn rewrite(body: &str, reads: &[String], write: Option<&str>) -> Option<String> {
    let b = body.as_bytes();
    let mut out = String::with_capacity(body.len() + 256);
    let mut i = 0;
    while i < b.len() {
        if !ident_char(b[i]) || (i > 0 && (ident_char(b[i - 1]) || b[i - 1] == b'.')) {
            let ch = body[i..].chars().next()?;
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        let start = i;
        while i < b.len() && ident_char(b[i]) {
            i += 1;
        }
        let name = &body[start..i];
        let is_read = reads.iter().any(|r| r == name);
        let is_write = write == Some(name);
        if (!is_read && !is_write) || b.get(i) != Some(&b'[') {
            out.push_str(name);
            continue;
        }
        let close = closing(b, i)?;
        let index = rewrite(&body[i + 1..close], reads, write)?;
        let access = format!("{name}[{index}]");
        let rest = &body[close + 1..];
        let assign = rest.trim_start();
        if is_write && assign.starts_with('=') && !assign.starts_with("==") {
            let eq = close + 1 + (rest.len() - assign.len());
            let end = statement_end(b, eq + 1)?;
            let value = rewrite(body[eq + 1..end].trim(), reads, write)?;
            out.push_str(&format!("{access} = vd_to_f16({value})"));
            i = end;
        } else {
            out.push_str(&format!("f32({access})"));
            i = close + 1;
        }
    }
    Some(out)
}

/// `k` with the inputs where `inputs[j]` is true stored as f16, and its output too when
/// `output`. Inputs already f16 are left as they are; retyping an input or output that is
/// not f32 is an error.
pub fn retype(k: &WgslKernel, inputs: &[bool], output: bool) -> Result<WgslKernel, WgslError> {
    if inputs.len() != k.inputs.len() {
        return Err(bad(k, format!("{} input flags for {} inputs", inputs.len(), k.inputs.len())));
    }
    let mut src = k.source.clone();
    let mut new_inputs = k.inputs.clone();
    let mut reads = Vec::new();
    let mut write = None;
    let n = k.inputs.len();
    let wanted = inputs.iter().enumerate().filter(|(_, &f)| f).map(|(j, _)| (j + 1, Some(j)));
    for (binding, input) in wanted.chain(output.then_some((n + 1, None))) {
        let have = input.map_or(k.output, |j| k.inputs[j]);
        if have == Elem::F16 {
            continue;
        }
        if have != Elem::F32 {
            return Err(bad(k, format!("binding {binding} holds {have:?}; only f32 bindings become f16")));
        }
        let (name, range) = declared(&src, binding, Elem::F32)
            .ok_or_else(|| bad(k, format!("no f32 declaration of binding {binding}")))?;
        let decl = src[range.clone()].replace(": array<f32>;", ": array<f16>;");
        src.replace_range(range, &decl);
        match input {
            Some(j) => {
                new_inputs[j] = Elem::F16;
                reads.push(name);
            }
            None => write = Some(name),
        }
    }
    if reads.is_empty() && write.is_none() {
        return Ok(k.clone());
    }
    // A read of the retyped output (read-modify-write) is widened too.
    if let Some(w) = &write {
        reads.push(w.clone());
    }
    let body_at = src.rfind(";\n@group(0)").map_or(0, |p| p + 2);
    let body_at = body_at + src[body_at..].find(";\n").map_or(0, |p| p + 2);
    let (decls, body) = src.split_at(body_at);
    let body = rewrite(body, &reads, write.as_deref()).ok_or_else(|| bad(k, "unbalanced access".into()))?;
    let mut entry = k.entry.strip_suffix("_f32").unwrap_or(&k.entry).to_string();
    entry += "_f16";
    let body = body.replacen(&format!("fn {}(", k.entry), &format!("fn {entry}("), 1);
    let mut text = String::from(if decls.starts_with("enable f16;") { "" } else { "enable f16;\n" });
    text += decls;
    text += &body;
    if write.is_some() {
        text += TO_F16;
        if !text.contains("fn vd_round_f16(") {
            text += super::elementwise::ROUNDING;
        }
    }
    let mut features = k.features;
    features.f16 = true;
    Ok(WgslKernel {
        entry,
        source: text,
        workgroup: k.workgroup,
        inputs: new_inputs,
        output: if write.is_some() { Elem::F16 } else { k.output },
        features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wgsl::elementwise::elementwise;
    use crate::wgsl::validate;

    #[test]
    fn reads_widen_and_writes_round() {
        let k = elementwise("add", &[Elem::F32, Elem::F32], Elem::F32, "x0 + x1").expect("add");
        let r = retype(&k, &[true, false], true).expect("retype");
        assert!(r.source.starts_with("enable f16;\n"), "{}", r.source);
        assert!(r.source.contains("var<storage, read> in0: array<f16>;"));
        assert!(r.source.contains("var<storage, read> in1: array<f32>;"));
        assert!(r.source.contains("var<storage, read_write> out: array<f16>;"));
        assert!(r.source.contains("f32(in0[o0])") && r.source.contains("in1[o1]") && !r.source.contains("f32(in1"));
        assert!(r.source.contains("out[i] = vd_to_f16(x0 + x1);"), "{}", r.source);
        assert_eq!(r.entry, "elementwise_add_f16");
        assert_eq!((r.inputs.clone(), r.output, r.features.f16), (vec![Elem::F16, Elem::F32], Elem::F16, true));
        validate(&r).expect("valid");
        // Not valid without the capability: the flag is what makes it run.
        let mut without = r.clone();
        without.features.f16 = false;
        assert!(validate(&without).is_err());
    }

    #[test]
    fn nothing_to_retype_is_the_same_kernel_and_integers_are_refused() {
        let k = elementwise("add", &[Elem::F32], Elem::F32, "x0").expect("k");
        assert_eq!(retype(&k, &[false], false).expect("same"), k);
        let i = elementwise("add", &[Elem::I32], Elem::I32, "x0").expect("k");
        assert!(retype(&i, &[true], false).is_err());
        assert!(retype(&i, &[false], true).is_err());
        assert!(retype(&k, &[true, true], false).is_err(), "flag count");
    }

    #[test]
    fn nested_accesses_are_rewritten_inside_out() {
        let body = "    let v = table[u32(ids[i]) * d];\n    out[i] = table[xtable[i]] + wg.table[i];\n";
        let r = rewrite(body, &["table".into()], Some("out")).expect("rewrite");
        assert_eq!(
            r,
            "    let v = f32(table[u32(ids[i]) * d]);\n    out[i] = vd_to_f16(f32(table[xtable[i]]) + wg.table[i]);\n"
        );
        assert!(rewrite("x[(]", &["x".into()], None).is_none());
    }
}
