//! Text encoding: WanPipeline's prompt handling (SPEC-NOTES §4.3) and the umT5 encoder.
//!
//! [`Tokenizer`] turns a prompt into a fixed-length row of token ids and an attention mask
//! (cleaned text, the tokens, `</s>`, then padding); [`TextEncoder`] runs the umT5 graph on
//! a backend and applies the pipeline's zero padding to produce `prompt_embeds`.

use std::path::Path;

use tokenizers::{PostProcessor, TruncationDirection};
use vidrt_graph::umt5::{build_umt5, Umt5Config, Umt5Error, Umt5Options, EMBED_WEIGHT, EMBED_WEIGHT_ALIAS};
use vidrt_ir::{DType, Shape, Tensor};
use vidrt_runtime::{Backend, Executable, RuntimeError, WeightSource};

use crate::error::{Error, Result};

/// Vocabulary size of [`Tokenizer::builtin_tiny`].
pub const TINY_VOCAB: usize = 512;
/// Padding id (umT5's `<pad>`).
pub const PAD_ID: i64 = 0;
/// End-of-sequence id (umT5's `</s>`).
pub const EOS_ID: i64 = 1;
/// First id of the byte range of [`Tokenizer::builtin_tiny`]: byte `b` is id `BYTE_OFFSET + b`.
pub const BYTE_OFFSET: i64 = 2;

/// A prompt tokenizer.
pub struct Tokenizer {
    kind: Kind,
}

enum Kind {
    /// UTF-8 bytes of the cleaned text, byte `b` → id `2 + b`.
    Bytes,
    /// A Hugging Face `tokenizer.json`.
    Hf { tok: Box<tokenizers::Tokenizer>, pad_id: i64, eos_id: Option<i64>, vocab: usize },
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json` (e.g. `google/umt5-xxl`'s) through the
    /// `tokenizers` crate. Special tokens come from the file's post-processor (umT5 appends
    /// `</s>`); the pad id is the file's padding id, else the id of `<pad>`, else 0.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_bytes(&bytes)
            .map_err(|e| Error::Case { path: path.to_path_buf(), reason: format!("not a usable tokenizer.json: {e}") })
    }

    /// Loads a `tokenizer.json` held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut tok =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::Other(format!("tokenizer.json: {e}")))?;
        let pad_id = tok.get_padding().map(|p| p.pad_id).or_else(|| tok.token_to_id("<pad>")).map_or(PAD_ID, i64::from);
        let eos_id = tok.token_to_id("</s>").map(i64::from);
        // Truncation and padding are done by `encode` to the requested length.
        tok.with_padding(None);
        tok.with_truncation(None).map_err(|e| Error::Other(format!("tokenizer.json: {e}")))?;
        let vocab = tok.get_vocab_size(true);
        Ok(Tokenizer { kind: Kind::Hf { tok: Box::new(tok), pad_id, eos_id, vocab } })
    }

    /// The built-in tokenizer of the embedded tiny model (vocabulary [`TINY_VOCAB`] = 512):
    /// id 0 is padding, id 1 is `</s>`, the UTF-8 bytes of the cleaned prompt map to ids
    /// 2..=257 (byte `b` → `b + 2`); ids 258..511 are never produced. It never yields an id
    /// outside the vocabulary.
    pub fn builtin_tiny() -> Self {
        Tokenizer { kind: Kind::Bytes }
    }

    /// Vocabulary size (ids produced are always below it).
    pub fn vocab_size(&self) -> usize {
        match &self.kind {
            Kind::Bytes => TINY_VOCAB,
            Kind::Hf { vocab, .. } => *vocab,
        }
    }

    /// The padding id.
    pub fn pad_id(&self) -> i64 {
        match &self.kind {
            Kind::Bytes => PAD_ID,
            Kind::Hf { pad_id, .. } => *pad_id,
        }
    }

    /// WanPipeline's tokenisation of one prompt: [`prompt_clean`], the tokens, `</s>`,
    /// truncated to `max_len` (the `</s>` is kept) and padded to `max_len` with the pad id.
    /// Returns `(ids, mask)`, both `max_len` long; the mask is 1 on the tokens and `</s>`.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<(Vec<i64>, Vec<i64>)> {
        if max_len == 0 {
            return Err(Error::Invalid("max_len must be positive".into()));
        }
        let text = prompt_clean(text);
        let (mut ids, pad) = match &self.kind {
            Kind::Bytes => {
                let mut ids: Vec<i64> = text.bytes().take(max_len - 1).map(|b| BYTE_OFFSET + i64::from(b)).collect();
                ids.push(EOS_ID);
                (ids, PAD_ID)
            }
            Kind::Hf { tok, pad_id, eos_id, .. } => (hf_encode(tok, &text, *eos_id, max_len)?, *pad_id),
        };
        ids.truncate(max_len);
        let mut mask = vec![1i64; ids.len()];
        ids.resize(max_len, pad);
        mask.resize(max_len, 0);
        Ok((ids, mask))
    }

    /// [`Tokenizer::encode`] for several prompts: ids and mask as i64 tensors `[B, max_len]`.
    pub fn encode_batch(&self, texts: &[&str], max_len: usize) -> Result<(Tensor, Tensor)> {
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for t in texts {
            let (i, m) = self.encode(t, max_len)?;
            ids.extend(i);
            mask.extend(m);
        }
        let shape = [texts.len(), max_len];
        let ids = Tensor::from_i64(shape, ids).map_err(|e| Error::Other(e.to_string()))?;
        let mask = Tensor::from_i64(shape, mask).map_err(|e| Error::Other(e.to_string()))?;
        Ok((ids, mask))
    }
}

/// Tokens of `text` with the file's special tokens (or a plain `</s>` when the file has no
/// post-processor), at most `max_len` of them, the special tokens kept.
fn hf_encode(tok: &tokenizers::Tokenizer, text: &str, eos_id: Option<i64>, max_len: usize) -> Result<Vec<i64>> {
    let err = |e: tokenizers::Error| Error::Other(format!("tokenizer: {e}"));
    let mut enc = tok.encode(text, false).map_err(err)?;
    let processor = tok.get_post_processor();
    let added = match processor {
        Some(p) => p.added_tokens(false),
        None => usize::from(eos_id.is_some()),
    };
    enc.truncate(max_len.saturating_sub(added), 0, TruncationDirection::Right);
    let enc = tok.post_process(enc, None, true).map_err(err)?;
    let mut ids: Vec<i64> = enc.get_ids().iter().map(|&i| i64::from(i)).collect();
    if processor.is_none() {
        ids.extend(eos_id);
    }
    Ok(ids)
}

/// WanPipeline's `prompt_clean`: HTML-unescape twice, collapse every run of whitespace to
/// one space, strip. (diffusers also applies `ftfy.fix_text` when ftfy is installed; that
/// is not done here.) Numeric character references and the common named entities are
/// decoded; see [`html_unescape`].
pub fn prompt_clean(text: &str) -> String {
    let text = html_unescape(&html_unescape(text));
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if is_py_space(c) {
            pending_space = true;
        } else {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        }
    }
    out
}

/// Python's `str.isspace` (what `\s` matches in a `str` regex).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Named entities decoded by [`html_unescape`] (with their `;`).
const NAMED: &[(&str, &str)] = &[
    ("amp", "&"),
    ("lt", "<"),
    ("gt", ">"),
    ("quot", "\""),
    ("apos", "'"),
    ("nbsp", "\u{a0}"),
    ("copy", "©"),
    ("reg", "®"),
    ("trade", "™"),
    ("hellip", "…"),
    ("mdash", "—"),
    ("ndash", "–"),
    ("lsquo", "‘"),
    ("rsquo", "’"),
    ("sbquo", "‚"),
    ("ldquo", "“"),
    ("rdquo", "”"),
    ("bdquo", "„"),
    ("laquo", "«"),
    ("raquo", "»"),
    ("middot", "·"),
    ("bull", "•"),
    ("deg", "°"),
    ("times", "×"),
    ("divide", "÷"),
    ("plusmn", "±"),
    ("euro", "€"),
    ("pound", "£"),
    ("yen", "¥"),
    ("cent", "¢"),
    ("sect", "§"),
    ("para", "¶"),
    ("iexcl", "¡"),
    ("iquest", "¿"),
    ("shy", "\u{ad}"),
    ("ensp", "\u{2002}"),
    ("emsp", "\u{2003}"),
    ("thinsp", "\u{2009}"),
    ("zwnj", "\u{200c}"),
    ("zwj", "\u{200d}"),
];

/// Named entities HTML5 also accepts without the `;` (a subset of Python's table).
const LEGACY: &[&str] = &["amp", "lt", "gt", "quot", "nbsp", "copy", "reg"];

/// Windows-1252 meanings of the character references `&#128;`..`&#159;` (HTML5).
const CP1252: [u32; 32] = [
    0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x8D, 0x017D,
    0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D,
    0x017E, 0x0178,
];

/// Python's `html.unescape` for numeric references (`&#NN;`, `&#xHH;`, `;` optional, with
/// HTML5's replacements of invalid code points) and the named entities in a fixed list
/// (the common ones; `&amp`, `&lt`, `&gt`, `&quot`, `&nbsp`, `&copy`, `&reg` also without
/// `;`). Anything else is left as it is.
pub fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        match decode_ref(rest) {
            Some((text, used)) => {
                out.push_str(&text);
                rest = &rest[used..];
            }
            None => out.push('&'),
        }
    }
    out.push_str(rest);
    out
}

/// Decodes the reference that follows a `&`: the replacement and the bytes consumed.
fn decode_ref(s: &str) -> Option<(String, usize)> {
    if let Some(num) = s.strip_prefix('#') {
        let (hex, digits) = match num.strip_prefix(['x', 'X']) {
            Some(h) => (true, h),
            None => (false, num),
        };
        let len = digits.bytes().take_while(|b| if hex { b.is_ascii_hexdigit() } else { b.is_ascii_digit() }).count();
        if len == 0 {
            return None;
        }
        let value = u32::from_str_radix(&digits[..len], if hex { 16 } else { 10 }).unwrap_or(u32::MAX);
        let prefix = 1 + usize::from(hex) + len;
        let used = prefix + usize::from(digits[len..].starts_with(';'));
        return Some((char_ref(value), used));
    }
    let name_len = s.bytes().take_while(|b| b.is_ascii_alphanumeric()).count();
    let name = &s[..name_len];
    if s[name_len..].starts_with(';') {
        if let Some((_, v)) = NAMED.iter().find(|(n, _)| *n == name) {
            return Some((v.to_string(), name_len + 1));
        }
    }
    // Longest legacy name that prefixes the run, as Python does.
    LEGACY
        .iter()
        .filter(|n| name.starts_with(**n))
        .max_by_key(|n| n.len())
        .and_then(|n| NAMED.iter().find(|(k, _)| k == n).map(|(_, v)| (v.to_string(), n.len())))
}

/// The text of `&#value;` under HTML5's rules (as Python's `html.unescape`).
fn char_ref(value: u32) -> String {
    let invalid = |v: u32| {
        (0x1..=0x8).contains(&v)
            || (0xe..=0x1f).contains(&v)
            || (0x7f..=0x9f).contains(&v)
            || (0xfdd0..=0xfdef).contains(&v)
            || v == 0xb
            || (v & 0xfffe) == 0xfffe
    };
    let c = match value {
        0 => Some('\u{fffd}'),
        0x0d => Some('\r'),
        0x80..=0x9f => char::from_u32(CP1252[(value - 0x80) as usize]),
        0xd800..=0xdfff => Some('\u{fffd}'),
        v if v > 0x10ffff => Some('\u{fffd}'),
        v if invalid(v) => None,
        v => char::from_u32(v),
    };
    c.map(String::from).unwrap_or_default()
}

/// A weight source that serves the tied umT5 embedding under either transformers name:
/// a request for `shared.weight` falls back to `encoder.embed_tokens.weight`.
pub struct TiedEmbedding<'a> {
    pub inner: &'a dyn WeightSource,
}

impl WeightSource for TiedEmbedding<'_> {
    fn fetch(&self, name: &str, shape: &Shape, dtype: DType) -> std::result::Result<Tensor, RuntimeError> {
        match self.inner.fetch(name, shape, dtype) {
            Err(first) if name == EMBED_WEIGHT => self.inner.fetch(EMBED_WEIGHT_ALIAS, shape, dtype).map_err(|_| first),
            other => other,
        }
    }
}

/// Converts a graph-building error into the facade's error.
fn umt5_error(e: Umt5Error) -> Error {
    match e {
        Umt5Error::Ir(e) => Error::Ir(e),
        other => Error::Invalid(other.to_string()),
    }
}

/// The umT5 encoder compiled on a backend. The graph is built for one `[batch, seq_len]`
/// and rebuilt when a call brings another shape.
pub struct TextEncoder<'a> {
    backend: &'a dyn Backend,
    weights: &'a dyn WeightSource,
    cfg: Umt5Config,
    opts: Umt5Options,
    compiled: Option<([usize; 2], Box<dyn Executable>)>,
}

impl<'a> TextEncoder<'a> {
    /// An encoder for `cfg` whose weights (transformers names; `shared.weight` or
    /// `encoder.embed_tokens.weight`) come from `weights`. Nothing is compiled yet.
    pub fn new(
        backend: &'a dyn Backend,
        weights: &'a dyn WeightSource,
        cfg: Umt5Config,
        opts: Umt5Options,
    ) -> Result<Self> {
        cfg.validate().map_err(umt5_error)?;
        Ok(TextEncoder { backend, weights, cfg, opts, compiled: None })
    }

    /// The model config.
    pub fn config(&self) -> &Umt5Config {
        &self.cfg
    }

    /// Builds and compiles the graph for `[batch, seq_len]` unless it already is.
    pub fn compile(&mut self, batch: usize, seq_len: usize) -> Result<()> {
        if matches!(&self.compiled, Some((s, _)) if *s == [batch, seq_len]) {
            return Ok(());
        }
        // Release the previous executable (and its weights) before binding new ones.
        self.compiled = None;
        let g = build_umt5(&self.cfg, batch, seq_len, &self.opts).map_err(umt5_error)?;
        let exe = self.backend.compile(&g, &TiedEmbedding { inner: self.weights })?;
        self.compiled = Some(([batch, seq_len], exe));
        Ok(())
    }

    /// Runs the encoder on ids and mask (integer tensors `[B, L]`); returns every graph
    /// output by name: `last_hidden_state` `[B, L, d_model]` and, when the options ask for
    /// them, the activations.
    pub fn forward(&mut self, ids: &Tensor, mask: &Tensor) -> Result<Vec<(String, Tensor)>> {
        let [b, l] = match ids.dims() {
            &[b, l] => [b, l],
            _ => return Err(Error::Invalid(format!("input_ids must be [B, L], got {}", ids.shape()))),
        };
        if !ids.dtype().is_int() || !mask.dtype().is_int() {
            return Err(Error::Invalid("input_ids and attention_mask must be integer tensors".into()));
        }
        if mask.dims() != ids.dims() {
            return Err(Error::Invalid(format!(
                "attention_mask {} does not match input_ids {}",
                mask.shape(),
                ids.shape()
            )));
        }
        let ids = ids.cast(DType::I64);
        let vocab = self.cfg.vocab_size as i64;
        if let Some((i, id)) = ids.to_i64_vec().iter().enumerate().find(|(_, &id)| !(0..vocab).contains(&id)) {
            return Err(Error::Invalid(format!("token id {id} at position {i} is outside the vocabulary of {vocab}")));
        }
        self.compile(b, l)?;
        let exe = match &mut self.compiled {
            Some((_, exe)) => exe,
            None => return Err(Error::Other("text encoder: not compiled".into())),
        };
        Ok(exe.run(&[("input_ids", ids), ("attention_mask", mask.cast(DType::I64))])?)
    }

    /// The encoder's `last_hidden_state` `[B, L, d_model]` (padded rows included).
    pub fn encode_ids(&mut self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.forward(ids, mask)?
            .into_iter()
            .find(|(n, _)| n == "last_hidden_state")
            .map(|(_, t)| t)
            .ok_or_else(|| Error::Other("text encoder: no last_hidden_state output".into()))
    }

    /// WanPipeline's `prompt_embeds` `[B, max_sequence_length, d_model]`: the encoder's
    /// first `sum(mask)` rows of each sequence, zeros after them.
    pub fn prompt_embeds(&mut self, ids: &Tensor, mask: &Tensor, max_sequence_length: usize) -> Result<Tensor> {
        let h = self.encode_ids(ids, mask)?;
        zero_pad_embeds(&h, mask, max_sequence_length)
    }

    /// Tokenises `prompts` to `max_sequence_length` and returns their `prompt_embeds`.
    pub fn encode_prompts(
        &mut self,
        tokenizer: &Tokenizer,
        prompts: &[&str],
        max_sequence_length: usize,
    ) -> Result<Tensor> {
        let (ids, mask) = tokenizer.encode_batch(prompts, max_sequence_length)?;
        self.prompt_embeds(&ids, &mask, max_sequence_length)
    }
}

/// The pipeline's post-processing of `last_hidden_state` `[B, L, D]` with its mask `[B, L]`:
/// per sequence keep the first `n = sum(mask != 0)` rows and fill up to
/// `max_sequence_length` rows with zeros. Errors when some `n` exceeds `max_sequence_length`.
pub fn zero_pad_embeds(hidden: &Tensor, mask: &Tensor, max_sequence_length: usize) -> Result<Tensor> {
    let (b, l, d) = match hidden.dims() {
        &[b, l, d] => (b, l, d),
        _ => return Err(Error::Invalid(format!("hidden states must be [B, L, D], got {}", hidden.shape()))),
    };
    if mask.dims() != [b, l] {
        return Err(Error::Invalid(format!("mask {} does not match hidden states {}", mask.shape(), hidden.shape())));
    }
    let h = hidden.to_f32_vec();
    let m = mask.to_i64_vec();
    let mut out = vec![0f32; b * max_sequence_length * d];
    for bi in 0..b {
        let n = m[bi * l..(bi + 1) * l].iter().filter(|&&x| x != 0).count();
        if n > max_sequence_length {
            return Err(Error::Invalid(format!(
                "sequence {bi} has {n} tokens, more than max_sequence_length {max_sequence_length}"
            )));
        }
        let src = &h[bi * l * d..(bi * l + n) * d];
        out[bi * max_sequence_length * d..(bi * max_sequence_length + n) * d].copy_from_slice(src);
    }
    Tensor::from_f32([b, max_sequence_length, d], out).map_err(|e| Error::Other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_never_exceeds_vocab() {
        let tok = Tokenizer::builtin_tiny();
        let all_bytes: String = (1u32..0x800).filter_map(char::from_u32).collect();
        for text in ["", "a cat", "\u{10ffff}\u{ff}\u{7f}", all_bytes.as_str(), "ÿÿÿ 🎬 漢字"] {
            let (ids, mask) = tok.encode(text, 64).unwrap();
            assert_eq!((ids.len(), mask.len()), (64, 64));
            assert!(ids.iter().all(|&i| (0..tok.vocab_size() as i64).contains(&i)), "{ids:?}");
            assert!(ids.iter().all(|&i| i < 2 + 256));
        }
    }

    #[test]
    fn builtin_pads_and_truncates_keeping_eos() {
        let tok = Tokenizer::builtin_tiny();
        let (ids, mask) = tok.encode("  a&amp;b\n\tc ", 8).unwrap();
        // "a&b c" → bytes + 2, then </s>, then pad.
        let want: Vec<i64> = "a&b c".bytes().map(|b| i64::from(b) + 2).chain([EOS_ID, PAD_ID, PAD_ID]).collect();
        assert_eq!(ids, want);
        assert_eq!(mask, [1, 1, 1, 1, 1, 1, 0, 0]);
        let (ids, mask) = tok.encode("abcdefghij", 4).unwrap();
        assert_eq!(ids, [99, 100, 101, EOS_ID]);
        assert_eq!(mask, [1, 1, 1, 1]);
        let (ids, mask) = tok.encode("", 3).unwrap();
        assert_eq!((ids, mask), (vec![EOS_ID, 0, 0], vec![1, 0, 0]));
        assert!(tok.encode("x", 0).is_err());
        let (ids, mask) = tok.encode_batch(&["a", "bc"], 4).unwrap();
        assert_eq!(ids.dims(), &[2, 4]);
        assert_eq!(ids.to_i64_vec(), [99, 1, 0, 0, 100, 101, 1, 0]);
        assert_eq!(mask.to_i64_vec(), [1, 1, 0, 0, 1, 1, 1, 0]);
    }

    #[test]
    fn prompt_clean_matches_python() {
        assert_eq!(prompt_clean("  A\u{a0}cat\n\n sits \u{1f} "), "A cat sits");
        assert_eq!(prompt_clean("Tom &amp;amp; Jerry &lt;3 &#39;x&#x27; &#65"), "Tom & Jerry <3 'x' A");
        assert_eq!(html_unescape("&ampx &foo; &#150; &#0; &#xD800;"), "&x &foo; – \u{fffd} \u{fffd}");
        assert_eq!(html_unescape("a & b &; &#; &#x;"), "a & b &; &#; &#x;");
        assert_eq!(prompt_clean("&nbsp;&nbsp;"), "");
    }

    /// A word-level tokenizer with a `$A </s>` template, written as tokenizer.json.
    fn tiny_tokenizer_json() -> String {
        use tokenizers::models::wordlevel::WordLevel;
        use tokenizers::pre_tokenizers::whitespace::Whitespace;
        use tokenizers::processors::template::TemplateProcessing;
        let vocab = [("<pad>", 0u32), ("</s>", 1), ("<unk>", 2), ("a", 3), ("cat", 4), ("sits", 5), ("&", 6)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let model = WordLevel::builder().vocab(vocab).unk_token("<unk>".into()).build().unwrap();
        let mut tok = tokenizers::Tokenizer::new(model);
        tok.with_pre_tokenizer(Some(Whitespace {}));
        let template =
            TemplateProcessing::builder().try_single("$A </s>").unwrap().special_tokens(vec![("</s>", 1)]).build();
        tok.with_post_processor(Some(template.unwrap()));
        tok.to_string(false).unwrap()
    }

    #[test]
    fn tokenizer_json_loads_through_the_crate() {
        let dir = std::env::temp_dir().join(format!("vidrt-text-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, tiny_tokenizer_json()).unwrap();
        let tok = Tokenizer::from_file(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        let tok = tok.unwrap();
        assert_eq!((tok.vocab_size(), tok.pad_id()), (7, 0));
        let (ids, mask) = tok.encode(" a  cat&amp;dog\nsits ", 8).unwrap();
        // "a cat&dog sits": a, cat, &, dog(unk), sits, </s>, pad, pad
        assert_eq!(ids, [3, 4, 6, 2, 5, 1, 0, 0]);
        assert_eq!(mask, [1, 1, 1, 1, 1, 1, 0, 0]);
        // Truncation keeps </s> last.
        let (ids, mask) = tok.encode("a cat sits a cat", 3).unwrap();
        assert_eq!((ids, mask), (vec![3, 4, 1], vec![1, 1, 1]));
        let (ids, _) = tok.encode("cat", 1).unwrap();
        assert_eq!(ids, [1]);
        assert!(Tokenizer::from_file(dir.join("missing.json")).is_err());
        assert!(Tokenizer::from_bytes(b"{not json").is_err());
    }

    /// Deterministic non-trivial weights for every parameter of a tiny encoder graph.
    fn tiny_weights(cfg: &Umt5Config) -> std::collections::HashMap<String, Tensor> {
        let g = build_umt5(cfg, 1, 1, &Umt5Options::default()).unwrap();
        g.weights()
            .iter()
            .enumerate()
            .map(|(k, (name, id))| {
                let shape = g.shape(*id).clone();
                let v = (0..shape.numel()).map(|i| (((i * 7 + k * 13) % 23) as f32 - 11.0) / 17.0).collect();
                (name.to_string(), Tensor::from_f32(shape, v).unwrap())
            })
            .collect()
    }

    #[test]
    fn text_encoder_accepts_either_embedding_name_and_recompiles() {
        let cfg = Umt5Config {
            vocab_size: 20,
            d_model: 8,
            d_kv: 4,
            d_ff: 16,
            num_layers: 2,
            num_heads: 3,
            ..Umt5Config::default()
        };
        let cpu = vidrt_runtime::CpuBackend::new();
        let shared = tiny_weights(&cfg);
        let mut alias = shared.clone();
        let table = alias.remove(EMBED_WEIGHT).unwrap();
        alias.insert(EMBED_WEIGHT_ALIAS.to_string(), table);

        let ids = Tensor::from_i64([2, 5], vec![3, 4, 5, 1, 0, 7, 1, 0, 0, 0]).unwrap();
        let mask = Tensor::from_i64([2, 5], vec![1, 1, 1, 1, 0, 1, 1, 0, 0, 0]).unwrap();
        let mut a = TextEncoder::new(&cpu, &shared, cfg.clone(), Umt5Options::default()).unwrap();
        let mut b = TextEncoder::new(&cpu, &alias, cfg.clone(), Umt5Options::default()).unwrap();
        let ha = a.encode_ids(&ids, &mask).unwrap();
        let hb = b.encode_ids(&ids, &mask).unwrap();
        assert_eq!(ha.dims(), &[2, 5, 8]);
        assert_eq!(ha, hb);
        assert!(ha.to_f32_vec().iter().any(|&x| x.abs() > 1e-3));

        // Another shape recompiles. Padded keys are masked and the bias depends only on
        // key − query, so an unmasked run of the valid tokens gives the same valid rows.
        let short = Tensor::from_i64([1, 4], vec![3, 4, 5, 1]).unwrap();
        let ones = Tensor::full([1, 4], DType::I64, 1.0);
        let hs = a.encode_ids(&short, &ones).unwrap().to_f32_vec();
        let full = ha.to_f32_vec();
        for (x, y) in hs.iter().zip(&full[..4 * 8]) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }

        let pe = a.prompt_embeds(&ids, &mask, 6).unwrap();
        assert_eq!(pe.dims(), &[2, 6, 8]);
        let pe = pe.to_f32_vec();
        assert_eq!(&pe[..4 * 8], &full[..4 * 8]);
        assert!(pe[4 * 8..6 * 8].iter().all(|&x| x == 0.0));
        assert_eq!(&pe[6 * 8..8 * 8], &full[5 * 8..7 * 8]);

        let bad = Tensor::from_i64([1, 2], vec![3, 20]).unwrap();
        assert!(matches!(a.encode_ids(&bad, &Tensor::full([1, 2], DType::I64, 1.0)), Err(Error::Invalid(_))));
        let none = std::collections::HashMap::<String, Tensor>::new();
        let mut c = TextEncoder::new(&cpu, &none, cfg, Umt5Options::default()).unwrap();
        let err = c.encode_ids(&short, &ones).unwrap_err().to_string();
        assert!(err.contains(EMBED_WEIGHT), "{err}");
    }

    #[test]
    fn zero_pad_keeps_first_rows() {
        let h = Tensor::from_f32([2, 3, 2], (1..=12).map(|x| x as f32).collect()).unwrap();
        let m = Tensor::from_i64([2, 3], vec![1, 1, 0, 1, 0, 0]).unwrap();
        let p = zero_pad_embeds(&h, &m, 4).unwrap();
        assert_eq!(p.dims(), &[2, 4, 2]);
        assert_eq!(p.to_f32_vec(), [1., 2., 3., 4., 0., 0., 0., 0., 7., 8., 0., 0., 0., 0., 0., 0.]);
        assert!(zero_pad_embeds(&h, &m, 1).is_err());
    }
}
