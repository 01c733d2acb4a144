//! Bytes → the safetensors weight loader: `SafeTensorsFile::open` and `WeightStore::from_file`,
//! then every listed tensor read and converted to f32. Errors are fine; a panic is a bug.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vidrt_graph::{SafeTensorsFile, WeightStore};

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| vidrt_fuzz::scratch_dir("weights").join("model.safetensors"))
}

fuzz_target!(|data: &[u8]| {
    let p = path();
    // The loader only takes paths (it memory-maps the file): write the input there.
    std::fs::write(p, data).unwrap_or_else(|e| panic!("fuzz harness: writing {}: {e}", p.display()));
    if let Ok(f) = SafeTensorsFile::open(p) {
        for name in f.names() {
            let shape = f.shape(name);
            if let Ok(t) = f.get(name) {
                assert_eq!(Some(t.shape()), shape.as_ref(), "get() returned another shape than shape()");
                let v = t.to_f32_vec();
                assert_eq!(v.len(), t.shape().numel(), "element count of `{name}`");
            }
        }
        let _ = f.all();
        let _ = f.get("\u{0}missing");
    }
    if let Ok(store) = WeightStore::from_file(p) {
        for name in store.names() {
            if let (Some(shape), Ok(t)) = (store.shape(name), store.get(name)) {
                let _ = store.get_shaped(name, &shape);
                let _ = t.to_f32_vec();
            }
        }
    }
});
