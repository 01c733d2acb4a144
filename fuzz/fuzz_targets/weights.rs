//! Bytes → the safetensors weight loader (`SafeTensorsFile::open`, `WeightStore::from_file`,
//! every tensor read and converted).
//!
//! The body is `vidrt::fuzzing::weights` (src/fuzzing.rs), shared with the seeded mutation run of
//! `tests/fuzz_corpus.rs`. Errors from the code under test are fine; a panic, or a bug the
//! body reports as `Err`, is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = vidrt::fuzzing::weights(data) {
        panic!("{e}");
    }
});
