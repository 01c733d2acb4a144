//! The `vidrt` command line, run as a user would.

use std::path::PathBuf;
use std::process::{Command, Output};

fn vidrt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vidrt")).args(args).output().expect("run vidrt")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vidrt-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn generate_writes_mp4_and_gif() {
    let d = tmp("gen");
    let (mp4, gif) = (d.join("a.mp4"), d.join("a.gif"));
    let o = vidrt(&[
        "generate",
        "--prompt",
        "a red fox",
        "--frames",
        "5",
        "--steps",
        "2",
        "--out",
        mp4.to_str().expect("utf8"),
        "--out",
        gif.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let m = std::fs::read(&mp4).expect("mp4 written");
    assert_eq!(&m[4..8], b"ftyp", "an MP4 file");
    assert!(m.windows(4).any(|w| w == b"avc1"), "with an H.264 track");
    let g = std::fs::read(&gif).expect("gif written");
    assert_eq!(&g[..6], b"GIF89a");
    assert_eq!(std::fs::read_dir(&d).expect("ls").count(), 2, "no temporary files left");
}

#[test]
fn bad_requests_fail_cleanly() {
    let d = tmp("bad");
    // Unknown format: refused before any compute, nothing written.
    let o = vidrt(&["generate", "--out", d.join("a.avi").to_str().expect("utf8")]);
    assert!(!o.status.success());
    assert!(text(&o).contains("unknown output format"), "{}", text(&o));
    // Height not a multiple of 16.
    let o = vidrt(&["generate", "--height", "100", "--out", d.join("a.gif").to_str().expect("utf8")]);
    assert!(!o.status.success());
    assert!(text(&o).contains("multiples of 16"), "{}", text(&o));
    // A model folder that is not one.
    let o =
        vidrt(&["generate", "--model", d.to_str().expect("utf8"), "--out", d.join("b.gif").to_str().expect("utf8")]);
    assert!(!o.status.success());
    assert!(text(&o).contains("config.json"), "{}", text(&o));
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(&d).expect("ls").count(), 0, "nothing written");
    // Width not a multiple of 16, frames not 4k + 1, zero steps: each says what is allowed.
    let gif = d.join("c.gif");
    let gif = gif.to_str().expect("utf8");
    let o = vidrt(&["generate", "--width", "120", "--out", gif]);
    assert!(!o.status.success() && text(&o).contains("multiples of 16") && text(&o).contains("x120"), "{}", text(&o));
    let o = vidrt(&["generate", "--frames", "10", "--out", gif]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("--frames must be 4k + 1") && text(&o).contains("nearest are 9 and 13"), "{}", text(&o));
    let o = vidrt(&["generate", "--frames", "0", "--out", gif]);
    assert!(!o.status.success() && text(&o).contains("--frames must be 4k + 1"), "{}", text(&o));
    let o = vidrt(&["generate", "--steps", "0", "--out", gif]);
    assert!(!o.status.success() && text(&o).contains("--steps must be at least 1"), "{}", text(&o));
    // An unknown model name (not a folder): the message says what --model takes.
    let o = vidrt(&["generate", "--model", "wan9-t2v", "--out", gif]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("wan9-t2v") && text(&o).contains("diffusers-layout model folder"), "{}", text(&o));
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(&d).expect("ls").count(), 0, "nothing written");
    // A golden case folder that does not exist.
    let o = vidrt(&["eval", "--case", d.join("nope").to_str().expect("utf8")]);
    assert!(!o.status.success());
}

#[test]
fn eval_reports_each_check() {
    let Some(dir) = vidrt::golden::default_dir() else {
        panic!("golden data not found: set VIDRT_GOLDEN or place it at ../shared/golden");
    };
    let o = vidrt(&["eval", "--case", dir.join("scheduler").to_str().expect("utf8")]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("ok   shift3_n4.safetensors:unipc.prev_samples"), "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn ctrl_c_leaves_no_file() {
    let d = tmp("ctrlc");
    let out = d.join("long.mp4");
    let child = Command::new(env!("CARGO_BIN_EXE_vidrt"))
        .args(["generate", "--steps", "100000", "--out", out.to_str().expect("utf8")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(text(&o).contains("cancelled"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(&d).expect("ls").count(), 0, "no file, partial or whole");
}

/// `vidrt inspect` on the real 1.3B graphs (no weights): the figures the compiler issue asks
/// for. FLOPs are `vidrt_ir::cost` summed over the graph (a multiply-add is 2).
#[test]
fn inspect_reports_the_real_model() {
    let o = vidrt(&[
        "inspect",
        "--model",
        "wan2.1-t2v-1.3b",
        "--height",
        "480",
        "--width",
        "832",
        "--frames",
        "81",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("inspect --json prints JSON");
    assert_eq!(r["tokens"], 32760, "{r}");
    let comp = |name: &str| {
        r["components"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {r}"))
    };
    let gib = (1u64 << 30) as f64;
    let dit = comp("DiT forward");
    let flops = dit["fused"]["flops"].as_f64().expect("flops");
    assert!((2.7e14..2.95e14).contains(&flops), "DiT forward FLOPs {flops:e}");
    assert_eq!(dit["unfused"]["flops"], dit["fused"]["flops"], "fusion must not change the FLOP count");
    let dit_peak = dit["fused"]["peak_bf16"].as_f64().expect("peak");
    assert!(dit_peak > 0.0 && dit_peak < 2.0 * gib, "DiT bf16 peak {:.2} GiB", dit_peak / gib);
    assert!(dit["fused"]["kernel_launches"].as_u64() < dit["unfused"]["kernel_launches"].as_u64());
    let vae = comp("VAE decode");
    let vae_peak = vae["fused"]["peak_bf16"].as_f64().expect("peak");
    assert!(vae_peak > 0.0 && vae_peak < 4.0 * gib, "VAE decode bf16 peak {:.2} GiB", vae_peak / gib);
    comp("text encoder (umT5)");
    // The table form, and a clear refusal of a size the model cannot take.
    let t = vidrt(&["inspect", "--model", "wan2.1-t2v-14b", "--height", "480", "--width", "832", "--frames", "81"]);
    assert!(t.status.success() && text(&t).contains("DiT forward"), "{}", text(&t));
    let bad = vidrt(&["inspect", "--model", "wan2.1-t2v-1.3b", "--height", "488"]);
    assert!(!bad.status.success() && text(&bad).contains("multiples of 16"), "{}", text(&bad));
    let unknown = vidrt(&["inspect", "--model", "wan9"]);
    assert!(!unknown.status.success() && text(&unknown).contains("wan2.1-t2v-1.3b"), "{}", text(&unknown));
}

/// A run whose planned activation memory exceeds the limit is refused before any compute,
/// with a message saying what was needed, and nothing is written.
#[test]
fn over_the_memory_limit_is_refused_up_front() {
    let d = tmp("oom");
    let out = d.join("x.gif");
    let o = vidrt(&[
        "generate",
        "--frames",
        "5",
        "--steps",
        "1",
        "--memory-limit",
        "64K",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("out of memory") && text(&o).contains("planned activation arena"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(&d).expect("ls").count(), 0, "nothing written");
    let bad = vidrt(&["generate", "--memory-limit", "12Q", "--out", out.to_str().expect("utf8")]);
    assert!(!bad.status.success() && text(&bad).contains("unknown unit"), "{}", text(&bad));
    // A device backend counts the resident weights too (the built-in model has 146 KiB): the
    // CUDA kernels in the simulator, refused before anything runs.
    for limit in ["64K", "4M"] {
        let o = vidrt(&[
            "generate",
            "--backend",
            "ptx-sim",
            "--frames",
            "5",
            "--steps",
            "1",
            "--height",
            "16",
            "--width",
            "32",
            "--memory-limit",
            limit,
            "--out",
            out.to_str().expect("utf8"),
        ]);
        let t = text(&o);
        assert!(!o.status.success() && t.contains("out of memory"), "{t}");
        assert!(t.contains("planned activation arena") && t.contains("bytes of weights"), "{t}");
        assert_eq!(std::fs::read_dir(&d).expect("ls").count(), 0, "nothing written");
    }
}

/// `vidrt bench` on the CPU at a tiny scale writes JSON, markdown and an SVG roofline, and
/// `--compare` of a report with itself gives ratio 1.
#[test]
fn bench_writes_json_markdown_and_plot() {
    let d = tmp("bench");
    let (j, m, p) = (d.join("r.json"), d.join("r.md"), d.join("r.svg"));
    let o = vidrt(&[
        "bench",
        "--model",
        "tiny",
        "--scale",
        "16",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--suite",
        "kernels",
        "--json",
        j.to_str().expect("utf8"),
        "--markdown",
        m.to_str().expect("utf8"),
        "--plot",
        p.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).expect("json")).expect("valid JSON");
    assert!(report.is_object());
    assert!(std::fs::read_to_string(&m).expect("md").contains("| benchmark |"));
    assert!(std::fs::read_to_string(&p).expect("svg").starts_with("<svg"));
    let c = vidrt(&["bench", "--compare", j.to_str().expect("utf8"), j.to_str().expect("utf8")]);
    assert!(c.status.success() && text(&c).contains("1.00"), "{}", text(&c));
    let bad = vidrt(&["bench", "--suite", "nope"]);
    assert!(!bad.status.success(), "{}", text(&bad));
}

/// The debug mode: every intermediate of every graph checked for NaN/inf; a healthy run
/// passes and writes its file.
#[test]
fn generate_with_check_intermediates() {
    let d = tmp("check");
    let out = d.join("x.gif");
    let o = vidrt(&[
        "generate",
        "--frames",
        "5",
        "--steps",
        "1",
        "--height",
        "32",
        "--width",
        "32",
        "--check-intermediates",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(&std::fs::read(&out).expect("gif written")[..6], b"GIF89a");
}

/// `--precision` takes f32, bf16 or f16; anything else is refused before any work.
#[test]
fn generate_refuses_an_unknown_precision() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vidrt"))
        .args(["generate", "--precision", "f8", "--out", "/nonexistent/never.gif"])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("unknown --precision `f8` (f32, bf16 or f16)"), "{err}");
}
