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
