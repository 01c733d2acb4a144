//! Bad weight files: every one is a typed error naming the file (and the tensor where there
//! is one), never a panic and never an allocation of a declared size taken on trust.

#![allow(clippy::expect_used)] // test helpers: a failed expectation is a test failure

use std::path::{Path, PathBuf};

use vidrt_graph::{SafeTensorsFile, WeightError, WeightStore};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vidrt-weights-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

/// A safetensors file from a header JSON text and a data section.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn good() -> Vec<u8> {
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    raw(
        r#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}"#,
        &data,
    )
}

fn write(d: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = d.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

fn corrupt(bytes: &[u8], what: &str) {
    let d = dir("corrupt");
    let p = write(&d, "model.safetensors", bytes);
    match SafeTensorsFile::open(&p) {
        Err(e @ WeightError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("model.safetensors"), "{what}: {msg}");
        }
        Err(e) => panic!("{what}: expected Corrupt, got {e}"),
        Ok(_) => panic!("{what}: opened a bad file"),
    }
}

#[test]
fn good_file_reads() {
    let d = dir("good");
    let p = write(&d, "m.safetensors", &good());
    let f = SafeTensorsFile::open(&p).expect("opens");
    assert_eq!(f.get("a").expect("a").to_f32_vec(), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(f.get("b").expect("b").to_f32_vec(), vec![5.0, 6.0]);
}

#[test]
fn malformed_files_are_corrupt_errors() {
    let g = good();
    corrupt(&g[..g.len() - 3], "truncated data");
    corrupt(&g[..20], "truncated header");
    corrupt(&g[..5], "shorter than the length prefix");
    corrupt(&[], "empty");
    // A header length far beyond the file (and beyond memory): must not allocate it.
    let mut huge = g.clone();
    huge[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    corrupt(&huge, "huge header length");
    corrupt(&raw("{not json", &[]), "header not JSON");
    corrupt(&raw(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,400]}}"#, &[0; 8]), "offsets past the end");
    corrupt(
        &raw(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            &[0; 12],
        ),
        "overlapping offsets",
    );
    corrupt(&raw(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, &[0; 8]), "shape does not match bytes");
    corrupt(
        &raw(r#"{"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}}"#, &[0; 8]),
        "huge declared shape",
    );
    corrupt(&raw(r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#, &[0; 8]), "unknown dtype name");
}

#[test]
fn unsupported_dtype_and_missing_tensor_name_it() {
    let d = dir("dtype");
    let p = write(&d, "m.safetensors", &raw(r#"{"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#, &[0; 8]));
    let f = SafeTensorsFile::open(&p).expect("valid container");
    let e = f.get("w").expect_err("f64 is not loaded");
    assert!(matches!(e, WeightError::UnsupportedDtype { .. }) && e.to_string().contains("`w`"), "{e}");
    let e = f.get("nope").expect_err("missing");
    assert!(matches!(e, WeightError::Missing { .. }) && e.to_string().contains("`nope`"), "{e}");
}

#[test]
fn bad_shard_indexes_name_the_problem() {
    let d = dir("index");
    write(&d, "model-00001-of-00002.safetensors", &good());
    let idx = |body: &str| write(&d, "model.safetensors.index.json", body.as_bytes());

    let p =
        idx(r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}}"#);
    let e = WeightStore::from_index(&p).err().expect("missing shard");
    assert!(e.to_string().contains("model-00002-of-00002.safetensors"), "{e}");

    let p = idx(r#"{"weight_map": {"zzz": "model-00001-of-00002.safetensors"}}"#);
    let e = WeightStore::from_index(&p).err().expect("tensor not in its shard");
    assert!(e.to_string().contains("zzz"), "{e}");

    let p = idx("{\"weight_map\": ");
    assert!(matches!(WeightStore::from_index(&p), Err(WeightError::Index { .. })));

    let p = idx(r#"{"weight_map": {"a": "../../etc/passwd"}}"#);
    let e = WeightStore::from_index(&p).err().expect("a shard outside the folder is refused");
    assert!(matches!(e, WeightError::Index { .. }) && e.to_string().contains("not a file name"), "{e}");
    let p = idx(r#"{"weight_map": {"a": 3}}"#);
    assert!(matches!(WeightStore::from_index(&p), Err(WeightError::Index { .. })));

    let empty = dir("empty");
    assert!(matches!(WeightStore::from_dir(&empty), Err(WeightError::NoWeights(_))));
    assert!(matches!(WeightStore::from_dir(empty.join("absent")), Err(WeightError::Io { .. })));
}
