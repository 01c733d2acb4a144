//! Loading a diffusers-layout model folder: single and sharded safetensors, original Wan
//! checkpoint names, and the errors for a missing, mis-shaped, extra or truncated tensor.
//! The folder is assembled from the golden tiny weights (seeded random, real names).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vidrt::golden::{default_dir, Case};
use vidrt::graph::wan_dit::original_name_from_diffusers;
use vidrt::graph::SafeTensorsFile;
use vidrt::ir::Tensor;
use vidrt::pipeline::{GenerateParams, Model, NoProgress, Pipeline};
use vidrt::runtime::CpuBackend;

fn golden() -> PathBuf {
    default_dir().expect("golden data not found: set VIDRT_GOLDEN or place it at ../shared/golden")
}

fn read_all(path: &Path) -> BTreeMap<String, Tensor> {
    SafeTensorsFile::open(path).and_then(|f| f.all()).unwrap_or_else(|e| panic!("{e}"))
}

fn write_st(path: &Path, tensors: &BTreeMap<String, Tensor>) {
    write_st_as(path, tensors, safetensors::Dtype::F32);
}

/// Writes `tensors` as f32, or rounded to bf16 (round to nearest even) when `dtype` is BF16.
fn write_st_as(path: &Path, tensors: &BTreeMap<String, Tensor>, dtype: safetensors::Dtype) {
    let encode = |x: f32| -> Vec<u8> {
        if dtype == safetensors::Dtype::BF16 {
            let b = x.to_bits();
            (((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16).to_le_bytes().to_vec()
        } else {
            x.to_le_bytes().to_vec()
        }
    };
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.to_f32_vec().into_iter().flat_map(encode).collect(), t.dims().to_vec()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, b, s)| (n.clone(), safetensors::tensor::TensorView::new(dtype, s.clone(), b).expect("view")))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).expect("write safetensors");
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn tokenizer_json() -> String {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    use tokenizers::processors::template::TemplateProcessing;
    let words = ["<pad>", "</s>", "<unk>", "a", "red", "fox", "in", "the", "snow"];
    let vocab = words.iter().enumerate().map(|(i, w)| (w.to_string(), i as u32)).collect();
    let model = WordLevel::builder().vocab(vocab).unk_token("<unk>".into()).build().expect("wordlevel");
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Whitespace {}));
    let template = TemplateProcessing::builder()
        .try_single("$A </s>")
        .expect("template")
        .special_tokens(vec![("</s>", 1)])
        .build()
        .expect("template");
    tok.with_post_processor(Some(template));
    tok.to_string(false).expect("json")
}

/// A fresh model folder named `name` from the golden tiny components.
fn folder(name: &str) -> PathBuf {
    let g = golden();
    let dir = std::env::temp_dir().join(format!("vidrt-model-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let parts = [
        ("transformer", "dit", "init_kwargs"),
        ("vae", "vae", "init_kwargs"),
        ("text_encoder", "text_encoder", "UMT5Config"),
    ];
    for (sub, case, key) in parts {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).expect("mkdir");
        let c = Case::load(g.join(case)).expect("case");
        std::fs::write(d.join("config.json"), c.config()[key].to_string()).expect("config");
        let file = if sub == "text_encoder" { "model.safetensors" } else { "diffusion_pytorch_model.safetensors" };
        std::fs::copy(g.join(case).join("weights.safetensors"), d.join(file)).expect("copy weights");
    }
    std::fs::create_dir_all(dir.join("tokenizer")).expect("mkdir");
    std::fs::write(dir.join("tokenizer/tokenizer.json"), tokenizer_json()).expect("tokenizer");
    std::fs::create_dir_all(dir.join("scheduler")).expect("mkdir");
    std::fs::write(
        dir.join("scheduler/scheduler_config.json"),
        r#"{"_class_name": "UniPCMultistepScheduler", "flow_shift": 3.0}"#,
    )
    .expect("scheduler");
    dir
}

fn small_call() -> GenerateParams {
    let mut p = GenerateParams::new("a red fox in the snow");
    (p.height, p.width, p.num_frames, p.num_inference_steps, p.seed) = (Some(32), Some(48), Some(5), Some(2), 3);
    p
}

fn generate(dir: &Path) -> Vec<f32> {
    let model = Model::load(dir).unwrap_or_else(|e| panic!("{e}"));
    let pipe = Pipeline::new(model, Box::new(CpuBackend::new()));
    let out = pipe.generate(&small_call(), &mut NoProgress).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.video.dims(), &[1, 3, 5, 32, 48]);
    out.video.to_f32_vec()
}

fn load_error(dir: &Path) -> String {
    match Model::load(dir) {
        Ok(_) => panic!("{} loaded but should not have", dir.display()),
        Err(e) => {
            eprintln!("expected error: {e}");
            e.to_string()
        }
    }
}

#[test]
fn single_sharded_and_original_names_give_the_same_video() {
    let base = folder("single");
    let reference = generate(&base);
    assert!(reference.iter().all(|x| x.is_finite()));

    // Sharded: two files and an index.
    let sharded = folder("sharded");
    let t = sharded.join("transformer");
    let all = read_all(&t.join("diffusion_pytorch_model.safetensors"));
    std::fs::remove_file(t.join("diffusion_pytorch_model.safetensors")).expect("rm");
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    for (i, (n, v)) in all.into_iter().enumerate() {
        if i % 2 == 0 {
            a.insert(n, v)
        } else {
            b.insert(n, v)
        };
    }
    let files =
        ["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"];
    write_st(&t.join(files[0]), &a);
    write_st(&t.join(files[1]), &b);
    let mut map = serde_json::Map::new();
    for (f, part) in files.iter().zip([&a, &b]) {
        for n in part.keys() {
            map.insert(n.clone(), serde_json::Value::String(f.to_string()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(t.join("diffusion_pytorch_model.safetensors.index.json"), index.to_string()).expect("index");
    assert_eq!(generate(&sharded), reference, "sharded folder");

    // The official Wan checkpoint's names.
    let original = folder("original");
    let t = original.join("transformer/diffusion_pytorch_model.safetensors");
    let renamed: BTreeMap<String, Tensor> = read_all(&t)
        .into_iter()
        .map(|(n, v)| (original_name_from_diffusers(&n).unwrap_or_else(|| panic!("no original name for {n}")), v))
        .collect();
    assert!(renamed.contains_key("blocks.0.self_attn.q.weight"));
    write_st(&t, &renamed);
    assert_eq!(generate(&original), reference, "original checkpoint names");

    // bf16 storage for every component, converted on load.
    let bf16 = folder("bf16");
    for rel in [
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ] {
        let p = bf16.join(rel);
        write_st_as(&p, &read_all(&p), safetensors::Dtype::BF16);
    }
    let v = generate(&bf16);
    let err = rel_l2(&v, &reference);
    assert!(err > 0.0 && err < 3e-2, "bf16 weights: rel L2 {err:.3e} against f32");
}

#[test]
fn bad_folders_fail_naming_the_tensor() {
    let path = |d: &Path| d.join("transformer/diffusion_pytorch_model.safetensors");

    let missing = folder("missing");
    let mut w = read_all(&path(&missing));
    w.remove("blocks.1.ffn.net.0.proj.weight").expect("present");
    write_st(&path(&missing), &w);
    let e = load_error(&missing);
    assert!(e.contains("blocks.1.ffn.net.0.proj.weight") && e.contains("missing"), "{e}");

    let misshaped = folder("misshaped");
    let mut w = read_all(&path(&misshaped));
    w.insert("proj_out.bias".into(), Tensor::from_f32([3], vec![0.5; 3]).expect("tensor"));
    write_st(&path(&misshaped), &w);
    let e = load_error(&misshaped);
    assert!(e.contains("proj_out.bias") && e.contains("[3]"), "{e}");

    let extra = folder("extra");
    let mut w = read_all(&path(&extra));
    w.insert("blocks.9.attn1.to_q.weight".into(), Tensor::from_f32([2], vec![0.5; 2]).expect("tensor"));
    write_st(&path(&extra), &w);
    let e = load_error(&extra);
    assert!(e.contains("blocks.9.attn1.to_q.weight"), "{e}");

    let truncated = folder("truncated");
    let p = truncated.join("vae/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&p).expect("read");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("truncate");
    let e = load_error(&truncated);
    assert!(e.contains("diffusion_pytorch_model.safetensors"), "{e}");

    let no_tokenizer = folder("no-tokenizer");
    std::fs::remove_file(no_tokenizer.join("tokenizer/tokenizer.json")).expect("rm");
    let e = load_error(&no_tokenizer);
    assert!(e.contains("tokenizer.json"), "{e}");
}

/// Moves tensor `name` of the transformer into a file of its own, stored as `dtype`.
fn restore_as(dir: &Path, name: &str, dtype: safetensors::Dtype) {
    let main = dir.join("transformer/diffusion_pytorch_model.safetensors");
    let mut w = read_all(&main);
    let t = w.remove(name).expect("present");
    write_st(&main, &w);
    let bytes: Vec<u8> = match dtype {
        safetensors::Dtype::F64 => t.to_f64_vec().into_iter().flat_map(f64::to_le_bytes).collect(),
        safetensors::Dtype::I32 => t.to_f32_vec().into_iter().flat_map(|x| (x as i32).to_le_bytes()).collect(),
        other => panic!("restore_as: {other:?}"),
    };
    let view = safetensors::tensor::TensorView::new(dtype, t.dims().to_vec(), &bytes).expect("view");
    safetensors::tensor::serialize_to_file(
        [(name.to_string(), view)],
        None,
        &dir.join("transformer/extra.safetensors"),
    )
    .expect("write");
}

#[test]
fn bad_dtypes_headers_and_shards_fail_naming_the_file_and_tensor() {
    // A dtype vidrt does not load.
    let f64s = folder("f64");
    restore_as(&f64s, "proj_out.bias", safetensors::Dtype::F64);
    let e = load_error(&f64s);
    assert!(e.contains("proj_out.bias") && e.contains("F64") && e.contains("extra.safetensors"), "{e}");
    // An integer tensor where the model needs floats.
    let ints = folder("i32");
    restore_as(&ints, "proj_out.bias", safetensors::Dtype::I32);
    let e = load_error(&ints);
    assert!(e.contains("proj_out.bias") && e.contains("i32") && e.contains("float dtype"), "{e}");

    // Header offsets that overlap: the file and both tensors named.
    let overlap = folder("overlap");
    let p = overlap.join("vae/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&p).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let obj = header.as_object_mut().expect("object");
    let (victim, at) = obj
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.get("data_offsets")?.as_array()?[0].as_u64()?)))
        .find(|(_, start)| *start > 0)
        .expect("a tensor after the first");
    let info = obj.get_mut(&victim).expect("victim");
    let end = info["data_offsets"][1].as_u64().expect("end");
    info["data_offsets"] = serde_json::json!([at - 4, end - 4]);
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&p, out).expect("write");
    let e = load_error(&overlap);
    assert!(e.contains("vae/diffusion_pytorch_model.safetensors") && e.contains(&format!("`{victim}`")), "{e}");
    assert!(e.contains("overlap") || e.contains("unused bytes"), "{e}");

    // A sharded index naming a shard that is not there.
    let sharded = folder("missing-shard");
    let t = sharded.join("transformer");
    let all = read_all(&t.join("diffusion_pytorch_model.safetensors"));
    let first = all.keys().next().expect("a tensor").clone();
    let map: serde_json::Map<String, serde_json::Value> = all
        .keys()
        .map(|n| {
            let shard =
                if *n == first { "gone-00002-of-00002.safetensors" } else { "diffusion_pytorch_model.safetensors" };
            (n.clone(), serde_json::Value::String(shard.into()))
        })
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(t.join("diffusion_pytorch_model.safetensors.index.json"), index.to_string()).expect("index");
    let e = load_error(&sharded);
    assert!(e.contains("gone-00002-of-00002.safetensors") && e.contains(&format!("`{first}`")), "{e}");
    assert!(e.contains("index.json") && e.contains("missing"), "{e}");
}
