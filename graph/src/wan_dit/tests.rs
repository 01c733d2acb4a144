use super::*;

/// The real 480p shape: 81 frames of 480×832 → latent [1, 16, 21, 60, 104], 512 text tokens.
fn real_shape() -> DitShape {
    DitShape { batch: 1, frames: 21, height: 60, width: 104, text_len: 512 }
}

fn param_count(g: &Graph) -> usize {
    g.weights().iter().map(|(_, id)| g.shape(*id).numel()).sum()
}

/// A small config in the shape of the golden case (2 heads × 32, 2 layers).
fn tiny() -> WanDitConfig {
    WanDitConfig::from_json_str(
        r#"{"patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 32,
            "in_channels": 16, "out_channels": 16, "text_dim": 32, "freq_dim": 256, "ffn_dim": 128,
            "num_layers": 2, "cross_attn_norm": true, "qk_norm": "rms_norm_across_heads", "eps": 1e-06,
            "image_dim": null, "added_kv_proj_dim": null, "rope_max_seq_len": 1024,
            "_class_name": "WanTransformer3DModel", "_diffusers_version": "0.42.1"}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn build(cfg: &WanDitConfig, shape: &DitShape, activations: bool) -> Graph {
    build_dit(cfg, shape, &DitOptions { activations }).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn wan_dit_1_3b_builds_at_real_shape() {
    let cfg = WanDitConfig::wan21_t2v_1_3b();
    assert_eq!(cfg.dim(), 1536);
    assert_eq!(cfg.rope_dims(), [44, 42, 42]);
    let shape = real_shape();
    assert_eq!(shape.tokens(&cfg).ok(), Some(32760));
    let g = build(&cfg, &shape, false);
    vidrt_ir::verify(&g).unwrap_or_else(|e| panic!("{e}"));
    // 15 top-level tensors + 27 per block.
    assert_eq!(g.weights().len(), 15 + 27 * 30);
    assert_eq!(g.weights().len(), 825);
    // D=1536: patch 99,840; time_embedder 2,755,584; time_proj 14,164,992; text_embedder
    // 8,653,824; 30 blocks × 46,440,704; head 3,072 + 98,368.
    assert_eq!(param_count(&g), 1_418_996_800);
    let out = g.output("output").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.shape(out).dims(), &[1, 16, 21, 60, 104]);
    assert_eq!(g.outputs.len(), 1);
}

#[test]
fn wan_dit_14b_builds_at_real_shape() {
    let cfg = WanDitConfig::wan21_t2v_14b();
    assert_eq!(cfg.dim(), 5120);
    let g = build(&cfg, &real_shape(), false);
    vidrt_ir::verify(&g).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.weights().len(), 15 + 27 * 40);
    assert_eq!(g.weights().len(), 1095);
    // D=5120: patch 332,800; time_embedder 27,535,360; time_proj 157,317,120; text_embedder
    // 47,196,160; 40 blocks × 351,394,304; head 10,240 + 327,744.
    assert_eq!(param_count(&g), 14_288_491_584);
}

#[test]
fn wan_dit_param_count_matches_formula() {
    for cfg in [WanDitConfig::wan21_t2v_1_3b(), WanDitConfig::wan21_t2v_14b(), tiny()] {
        let (d, f, t, q, c) = (cfg.dim(), cfg.ffn_dim, cfg.text_dim, cfg.freq_dim, cfg.in_channels);
        let lin = |i: usize, o: usize| i * o + o;
        let top = lin(c * 4, d) + lin(q, d) + lin(d, d) + lin(d, 6 * d) + lin(t, d) + lin(d, d);
        let block = 6 * d + 2 * (4 * lin(d, d) + 2 * d) + 2 * d + lin(d, f) + lin(f, d);
        let head = 2 * d + lin(d, 64);
        let g = build(&cfg, &DitShape { batch: 1, frames: 1, height: 2, width: 2, text_len: 1 }, false);
        assert_eq!(param_count(&g), top + cfg.num_layers * block + head);
    }
}

#[test]
fn wan_dit_tiny_graph_has_the_golden_activations() {
    let cfg = tiny();
    let shape = DitShape { batch: 2, frames: 3, height: 6, width: 8, text_len: 512 };
    let g = build(&cfg, &shape, true);
    vidrt_ir::verify(&g).unwrap_or_else(|e| panic!("{e}"));
    let dims = |name: &str| g.shape(g.output(name).unwrap_or_else(|e| panic!("{e}"))).dims().to_vec();
    assert_eq!(dims("output"), vec![2, 16, 3, 6, 8]);
    assert_eq!(dims("rope_cos"), vec![1, 36, 1, 32]);
    assert_eq!(dims("rope_sin"), vec![1, 36, 1, 32]);
    assert_eq!(dims("patch_embedding_out"), vec![2, 64, 3, 3, 4]);
    assert_eq!(dims("timestep_sinusoid"), vec![2, 256]);
    assert_eq!(dims("temb"), vec![2, 64]);
    assert_eq!(dims("timestep_proj"), vec![2, 384]);
    assert_eq!(dims("text_embed"), vec![2, 512, 64]);
    for name in [
        "block0.attn1.to_q_out",
        "block0.attn1.to_k_out",
        "block0.attn1.to_v_out",
        "block0.attn1.norm_q_out",
        "block0.attn1.norm_k_out",
        "block0.attn1_in",
        "block0.attn1_out",
        "block0.attn2_in",
        "block0.attn2_out",
        "block0.ffn_in",
        "block0.ffn_out",
        "block0_out",
        "block1_out",
        "head_in",
        "head_out",
    ] {
        assert_eq!(dims(name), vec![2, 36, 64], "{name}");
    }
    // The 22 tensors of the golden activations file, and the output.
    assert_eq!(g.outputs.len(), 23);
}

#[test]
fn wan_dit_config_defaults_and_odd_sizes() {
    // Missing keys take diffusers' defaults; out_channels null means in_channels.
    let cfg = WanDitConfig::from_json_str(
        r#"{"num_attention_heads": 3, "attention_head_dim": 12, "out_channels": null,
        "in_channels": 5, "text_dim": 7, "ffn_dim": 20, "num_layers": 1, "cross_attn_norm": false}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.patch_size, [1, 2, 2]);
    assert_eq!(cfg.freq_dim, 256);
    assert_eq!(cfg.out_channels(), 5);
    assert_eq!(cfg.rope_dims(), [4, 4, 4]);
    let shape = DitShape { batch: 1, frames: 5, height: 6, width: 10, text_len: 9 };
    let g = build(&cfg, &shape, true);
    assert_eq!(g.shape(g.output("output").unwrap_or_else(|e| panic!("{e}"))).dims(), &[1, 5, 5, 6, 10]);
    // No norm2 parameters without cross_attn_norm.
    assert!(g.weights().iter().all(|(n, _)| !n.contains("norm2")));
    // A temporal patch of 2 halves the frames.
    let cfg2 = WanDitConfig { patch_size: [2, 1, 1], ..cfg };
    let g = build(&cfg2, &DitShape { batch: 1, frames: 4, height: 3, width: 3, text_len: 2 }, false);
    assert_eq!(g.shape(g.output("output").unwrap_or_else(|e| panic!("{e}"))).dims(), &[1, 5, 4, 3, 3]);
}

#[test]
fn wan_dit_rejects_unsupported_configs() {
    let i2v = WanDitConfig { image_dim: Some(1280), added_kv_proj_dim: Some(5120), ..WanDitConfig::default() };
    assert!(matches!(i2v.validate(), Err(DitError::Unsupported(_))));
    let qk = WanDitConfig { qk_norm: Some("rms_norm".into()), ..WanDitConfig::default() };
    assert!(matches!(qk.validate(), Err(DitError::Unsupported(_))));
    for hd in [0, 4, 33] {
        let c = WanDitConfig { attention_head_dim: hd, ..WanDitConfig::default() };
        assert!(matches!(c.validate(), Err(DitError::InvalidConfig { .. })), "head dim {hd}");
    }
    let c = WanDitConfig { patch_size: [1, 0, 2], ..WanDitConfig::default() };
    assert!(matches!(c.validate(), Err(DitError::InvalidConfig { field: "patch_size", .. })));
    assert!(matches!(WanDitConfig::from_json_str(r#"{"num_layers": "many"}"#), Err(DitError::Parse(_))));
    assert!(matches!(WanDitConfig::from_json_str("[1"), Err(DitError::Parse(_))));
}

#[test]
fn wan_dit_rejects_bad_shapes() {
    let cfg = tiny();
    let opts = DitOptions::default();
    let odd = DitShape { batch: 1, frames: 3, height: 5, width: 8, text_len: 4 };
    assert!(matches!(build_dit(&cfg, &odd, &opts), Err(DitError::Shape(_))));
    let empty = DitShape { batch: 0, frames: 3, height: 4, width: 8, text_len: 4 };
    assert!(matches!(build_dit(&cfg, &empty, &opts), Err(DitError::Shape(_))));
    let no_text = DitShape { batch: 1, frames: 3, height: 4, width: 8, text_len: 0 };
    assert!(matches!(build_dit(&cfg, &no_text, &opts), Err(DitError::Shape(_))));
    let short = WanDitConfig { rope_max_seq_len: 2, ..cfg };
    let long = DitShape { batch: 1, frames: 3, height: 4, width: 4, text_len: 4 };
    assert!(matches!(build_dit(&short, &long, &opts), Err(DitError::Shape(_))));
}

#[test]
fn wan_dit_original_names_map_both_ways() {
    let cases = [
        ("patch_embedding.weight", "patch_embedding.weight"),
        ("time_embedding.0.weight", "condition_embedder.time_embedder.linear_1.weight"),
        ("time_embedding.2.bias", "condition_embedder.time_embedder.linear_2.bias"),
        ("time_projection.1.weight", "condition_embedder.time_proj.weight"),
        ("text_embedding.0.bias", "condition_embedder.text_embedder.linear_1.bias"),
        ("text_embedding.2.weight", "condition_embedder.text_embedder.linear_2.weight"),
        ("head.head.weight", "proj_out.weight"),
        ("head.modulation", "scale_shift_table"),
        ("blocks.0.modulation", "blocks.0.scale_shift_table"),
        ("blocks.12.self_attn.q.weight", "blocks.12.attn1.to_q.weight"),
        ("blocks.3.self_attn.o.bias", "blocks.3.attn1.to_out.0.bias"),
        ("blocks.3.self_attn.norm_k.weight", "blocks.3.attn1.norm_k.weight"),
        ("blocks.29.cross_attn.v.weight", "blocks.29.attn2.to_v.weight"),
        ("blocks.29.cross_attn.norm_q.weight", "blocks.29.attn2.norm_q.weight"),
        ("blocks.0.norm3.weight", "blocks.0.norm2.weight"),
        ("blocks.0.norm3.bias", "blocks.0.norm2.bias"),
        ("blocks.7.ffn.0.weight", "blocks.7.ffn.net.0.proj.weight"),
        ("blocks.7.ffn.2.bias", "blocks.7.ffn.net.2.bias"),
    ];
    for (orig, diff) in cases {
        assert_eq!(diffusers_name_from_original(orig).as_deref(), Some(diff), "{orig}");
        assert_eq!(original_name_from_diffusers(diff).as_deref(), Some(orig), "{diff}");
    }
    for bad in [
        "img_emb.proj.0.weight",
        "blocks.0.cross_attn.k_img.weight",
        "blocks.x.self_attn.q.weight",
        "blocks..self_attn.q.weight",
        "blocks.0.self_attn.q.scale",
        "head.head",
        "freqs",
        "",
    ] {
        assert_eq!(diffusers_name_from_original(bad), None, "{bad}");
    }
}

#[test]
fn wan_dit_every_graph_weight_has_an_original_name() {
    for cfg in [WanDitConfig::wan21_t2v_1_3b(), tiny()] {
        let g = build(&cfg, &DitShape { batch: 1, frames: 1, height: 2, width: 2, text_len: 1 }, false);
        let mut originals = std::collections::HashSet::new();
        for (name, _) in g.weights() {
            let orig = original_name_from_diffusers(name).unwrap_or_else(|| panic!("no original name for {name}"));
            assert_eq!(diffusers_name_from_original(&orig).as_deref(), Some(name), "{orig}");
            assert!(originals.insert(orig.clone()), "{orig} is produced twice");
        }
        assert_eq!(originals.len(), g.weights().len());
    }
}

#[test]
fn overflowing_widths_are_config_errors() {
    // Found by the `config` fuzz target: heads × head_dim (and patch × channels) overflowed
    // inside `validate` itself.
    for text in [
        r#"{"num_attention_heads": 4611686018427387904, "attention_head_dim": 8}"#,
        r#"{"num_attention_heads": 2, "attention_head_dim": 8, "patch_size": [4611686018427387904, 4, 1]}"#,
    ] {
        assert!(matches!(WanDitConfig::from_json_str(text), Err(DitError::InvalidConfig { .. })), "{text}");
    }
}
