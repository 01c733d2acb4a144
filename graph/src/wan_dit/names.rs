//! Original Wan2.1 checkpoint names (`diffusion_pytorch_model*.safetensors` of
//! Wan-AI/Wan2.1-T2V-*) ↔ diffusers `WanTransformer3DModel` names, as diffusers'
//! `scripts/convert_wan_to_diffusers.py` (`TRANSFORMER_KEYS_RENAME_DICT`) renames them.
//!
//! No tensor changes shape: `blocks.{i}.modulation` `[1, 6, D]` and `head.modulation`
//! `[1, 2, D]` become `scale_shift_table` as they are, and Linear/Conv3d layouts are the
//! same. The original's `norm3` (the affine LayerNorm before cross-attention) is diffusers'
//! `norm2` and vice versa. Only text-to-video names are mapped (no `img_emb`, no
//! `k_img`/`v_img`).

/// Top-level modules: (original prefix, diffusers prefix); the rest of the name follows.
const TOP: [(&str, &str); 7] = [
    ("patch_embedding.", "patch_embedding."),
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("head.head.", "proj_out."),
];

/// Whole-name renames outside the blocks.
const TOP_EXACT: [(&str, &str); 1] = [("head.modulation", "scale_shift_table")];

/// Module renames inside `blocks.{i}.`: (original, diffusers), each followed by `.param`.
const BLOCK: [(&str, &str); 16] = [
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("norm3", "norm2"),
    ("norm2", "norm3"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
];

/// Whole-name renames inside `blocks.{i}.`.
const BLOCK_EXACT: [(&str, &str); 1] = [("modulation", "scale_shift_table")];

/// Parameter names a module may carry.
const PARAMS: [&str; 2] = ["weight", "bias"];

/// Splits `blocks.{i}.rest` into (`blocks.{i}.`, rest) when `i` is a decimal index.
fn split_block(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("blocks.")?;
    let dot = rest.find('.')?;
    let idx = &rest[..dot];
    if idx.is_empty() || !idx.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let cut = "blocks.".len() + dot + 1;
    Some((&name[..cut], &name[cut..]))
}

type Pairs = [(&'static str, &'static str)];

/// A table's pairs as (from, to) in the direction asked for.
fn directed(pairs: &Pairs, forward: bool) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    pairs.iter().map(move |&(a, b)| if forward { (a, b) } else { (b, a) })
}

/// Maps `name` through a table of (from, to) pairs: an exact whole-name match, or a module
/// followed by `.weight`/`.bias`.
fn rename(name: &str, exact: &Pairs, modules: &Pairs, forward: bool) -> Option<String> {
    if let Some((_, to)) = directed(exact, forward).find(|(from, _)| *from == name) {
        return Some(to.to_string());
    }
    let (module, param) = name.rsplit_once('.')?;
    if !PARAMS.contains(&param) {
        return None;
    }
    let (_, to) = directed(modules, forward).find(|(from, _)| *from == module)?;
    Some(format!("{to}.{param}"))
}

fn map(name: &str, forward: bool) -> Option<String> {
    if let Some((prefix, rest)) = split_block(name) {
        return rename(rest, &BLOCK_EXACT, &BLOCK, forward).map(|r| format!("{prefix}{r}"));
    }
    if let Some(r) = rename(name, &TOP_EXACT, &[], forward) {
        return Some(r);
    }
    directed(&TOP, forward).find_map(|(from, to)| {
        let param = name.strip_prefix(from)?;
        PARAMS.contains(&param).then(|| format!("{to}{param}"))
    })
}

/// The diffusers name of an original Wan2.1 T2V checkpoint tensor (e.g.
/// `blocks.0.self_attn.q.weight` → `blocks.0.attn1.to_q.weight`, `head.modulation` →
/// `scale_shift_table`), or `None` for a name that is not part of the T2V DiT.
pub fn diffusers_name_from_original(name: &str) -> Option<String> {
    map(name, true)
}

/// The inverse of [`diffusers_name_from_original`]: the original checkpoint name of a
/// diffusers parameter, or `None` for a name that is not part of the T2V DiT.
pub fn original_name_from_diffusers(name: &str) -> Option<String> {
    map(name, false)
}
