//! The fuzz targets in CI, bounded to seconds: every seed of `fuzz/corpus/<target>/`, then a
//! fixed number of deterministic mutations of them, through the targets' bodies
//! (`vidrt::fuzzing`, the same functions `fuzz/fuzz_targets/*.rs` call) under `catch_unwind`.
//!
//! What this is and is not: a seeded mutation run (bit flips, byte inserts and deletes,
//! range copies, splices of two seeds, interesting integers as bytes and as decimal text,
//! tokens of `fuzz/dicts/<target>.dict`, truncation) driven by a fixed splitmix64 seed, so
//! every run tries the same inputs. It has no coverage guidance and no AddressSanitizer, so it
//! finds far less than libFuzzer; it keeps the seeds and the regression inputs passing and
//! catches shallow crashes without installing cargo-fuzz. The coverage-guided run (ASan,
//! overflow checks, a million executions per target) is `bash scripts/fuzz.sh`.
//!
//! A panic, or a bug a body reports as `Err`, fails the test naming the target, and the input
//! is written under `target/tmp/fuzz-crashes/` (replay it with `cargo fuzz run <target> FILE`
//! or add it to the corpus as `regress-*`). `VIDRT_FUZZ_RUNS=N` sets the number of mutations
//! per target (default: a few seconds' worth in the test profile).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use vidrt::fuzzing::{remove_scratch, Target, TARGETS};

/// splitmix64: a fixed, dependency-free stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u64; 16] = [
    0,
    1,
    2,
    7,
    8,
    0x7f,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 53,
    1 << 62,
    u64::MAX,
];

const INTERESTING_BYTES: &[u8] = b"\x00\xff\x7f\x80\"{}[],:-.0123456789\n%eE";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file of `fuzz/corpus/<target>/`, by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = root().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).expect("read seed")))
        .collect()
}

/// The tokens of a libFuzzer dictionary (`"text"` or `name="text"` lines; `\\`, `\"` and
/// `\xNN` escapes).
fn dictionary(target: &str) -> Vec<Vec<u8>> {
    let Ok(text) = std::fs::read_to_string(root().join("fuzz/dicts").join(format!("{target}.dict"))) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || !line.ends_with('"') {
            continue;
        }
        let Some(start) = line.find('"').filter(|s| s + 1 < line.len()) else { continue };
        let body = &line.as_bytes()[start + 1..line.len() - 1];
        let mut tok = Vec::new();
        let mut i = 0;
        while i < body.len() {
            if body[i] == b'\\' && i + 1 < body.len() {
                if body[i + 1] == b'x' && i + 3 < body.len() {
                    if let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&body[i + 2..i + 4]), 16) {
                        tok.push(b);
                        i += 4;
                        continue;
                    }
                }
                tok.push(body[i + 1]);
                i += 2;
            } else {
                tok.push(body[i]);
                i += 1;
            }
        }
        if !tok.is_empty() {
            out.push(tok);
        }
    }
    out
}

/// One mutation of `x` in place.
fn mutate_once(rng: &mut Rng, x: &mut Vec<u8>, seeds: &[(String, Vec<u8>)], dict: &[Vec<u8>]) {
    let n = x.len();
    match rng.below(11) {
        0 if n > 0 => {
            let i = rng.below(n);
            x[i] ^= 1 << rng.below(8);
        }
        1 if n > 0 => {
            let i = rng.below(n);
            x[i] = rng.next() as u8;
        }
        2 if n > 0 => {
            let i = rng.below(n);
            x[i] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
        }
        3 => {
            let i = rng.below(n + 1);
            for _ in 0..1 + rng.below(4) {
                x.insert(i, rng.next() as u8);
            }
        }
        4 if n > 0 => {
            let i = rng.below(n);
            let len = 1 + rng.below((n - i).min(16));
            x.drain(i..i + len);
        }
        5 if n > 0 => {
            // Copy a range to another place (repeats a JSON entry, an IR line, a header).
            let i = rng.below(n);
            let len = 1 + rng.below((n - i).min(64));
            let chunk = x[i..i + len].to_vec();
            let at = rng.below(n + 1);
            x.splice(at..at, chunk);
        }
        6 => {
            // Splice: this input's head and another seed's tail.
            let other = &seeds[rng.below(seeds.len())].1;
            let (a, b) = (rng.below(n + 1), rng.below(other.len() + 1));
            x.truncate(a);
            x.extend_from_slice(&other[b..]);
        }
        7 if n > 0 => {
            // An interesting integer as 1, 2, 4 or 8 little-endian bytes (sizes, offsets).
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let w = [1usize, 2, 4, 8][rng.below(4)].min(n);
            let i = rng.below(n - w + 1);
            x[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
        }
        8 => {
            // An interesting integer as decimal text, replacing a run of digits if there is one
            // at the chosen place (shape entries, offsets, sizes in JSON and IR text).
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let v = match rng.below(3) {
                0 => v.to_string(),
                1 => format!("-{v}"),
                _ => v.wrapping_add(rng.below(3) as u64).wrapping_sub(1).to_string(),
            };
            let mut i = rng.below(n + 1);
            while i > 0 && x[i - 1].is_ascii_digit() {
                i -= 1;
            }
            let mut j = i;
            while j < n && x[j].is_ascii_digit() {
                j += 1;
            }
            x.splice(i..j, v.into_bytes());
        }
        9 if !dict.is_empty() => {
            let tok = &dict[rng.below(dict.len())];
            let i = rng.below(n + 1);
            if rng.below(2) == 0 || n == 0 {
                x.splice(i..i, tok.iter().copied());
            } else {
                let j = (i + tok.len()).min(n);
                x.splice(i..j, tok.iter().copied());
            }
        }
        10 => x.truncate(rng.below(n + 1)),
        _ => x.push(rng.next() as u8),
    }
}

/// What a body did with one input: `Err` for a panic or a reported bug.
fn run_one(t: &Target, input: &[u8]) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| (t.body)(input))) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic with a non-string payload".into());
            Err(format!("panicked: {msg}"))
        }
    }
}

fn crash(t: &Target, what: &str, input: &[u8], err: &str) -> ! {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
    std::fs::create_dir_all(&dir).expect("mkdir fuzz-crashes");
    let h = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
    let file = dir.join(format!("{}-{h:016x}", t.name));
    std::fs::write(&file, input).expect("write the crashing input");
    remove_scratch(t.name);
    panic!("fuzz target `{}` failed on {what}: {err}\n(input written to {})", t.name, file.display());
}

/// Seeds, then `runs` stacked mutations, through the body of target `name`.
fn fuzz(name: &str, default_runs: usize) {
    let t = TARGETS.iter().find(|t| t.name == name).expect("a target of vidrt::fuzzing");
    let seeds = corpus(name);
    assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ has no seeds");
    for (file, data) in &seeds {
        if let Err(e) = run_one(t, data) {
            crash(t, &format!("seed {file}"), data, &e);
        }
    }
    let runs = std::env::var("VIDRT_FUZZ_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(default_runs);
    let dict = dictionary(name);
    // One fixed stream per target (the name's bytes mixed into the seed).
    let mut rng = Rng(name.bytes().fold(0x5eed_f022_u64, |h, b| h.rotate_left(8) ^ u64::from(b)));
    let mut prev: Vec<u8> = seeds[0].1.clone();
    let start = std::time::Instant::now();
    for i in 0..runs {
        // Mostly a fresh seed; sometimes keep walking from the last mutant.
        let mut x = if rng.below(4) == 0 { prev.clone() } else { seeds[rng.below(seeds.len())].1.clone() };
        for _ in 0..1 + rng.below(4) {
            mutate_once(&mut rng, &mut x, &seeds, &dict);
        }
        x.truncate(t.max_len);
        if let Err(e) = run_one(t, &x) {
            crash(t, &format!("mutation {i} of {runs}"), &x, &e);
        }
        prev = x;
    }
    remove_scratch(name);
    eprintln!(
        "fuzz_corpus {name}: {} seeds and {runs} mutations in {:.1} s, no crash",
        seeds.len(),
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn weights() {
    fuzz("weights", 50_000);
}

#[test]
fn ir_text() {
    fuzz("ir_text", 80_000);
}

#[test]
fn config() {
    fuzz("config", 20_000);
}

#[test]
fn golden_case() {
    fuzz("golden_case", 300_000);
}

/// The harness itself: a panicking or failing body is caught and reported, and the mutator
/// is deterministic and changes its input.
#[test]
fn harness_catches_failures_and_mutations_are_deterministic() {
    let panics =
        Target { name: "panics", max_len: 16, body: |d| if d.is_empty() { Ok(()) } else { panic!("boom {}", d[0]) } };
    assert_eq!(run_one(&panics, b""), Ok(()));
    assert_eq!(run_one(&panics, b"\x07"), Err("panicked: boom 7".to_string()));
    let fails = Target { name: "fails", max_len: 16, body: |_| Err("round trip".into()) };
    assert_eq!(run_one(&fails, b"x"), Err("round trip".to_string()));

    let seeds = vec![("a".to_string(), b"{\"x\": [1, 2, 3]}".to_vec())];
    let walk = |seed: u64| {
        let mut rng = Rng(seed);
        (0..50)
            .map(|_| {
                let mut x = seeds[0].1.clone();
                mutate_once(&mut rng, &mut x, &seeds, &[b"\"shape\"".to_vec()]);
                x
            })
            .collect::<Vec<_>>()
    };
    let a = walk(1);
    assert_eq!(a, walk(1));
    assert_ne!(a, walk(2));
    assert!(a.iter().filter(|x| **x != seeds[0].1).count() > 40, "most mutations change the input");
    assert_eq!(dictionary("ir_text").first().map(Vec::as_slice), Some(&b"input"[..]));
}
