//! Bytes → a golden case's `case.json` (`vidrt::golden::Case::from_json`), its checks,
//! tensors and component configs.
//!
//! The body is `vidrt::fuzzing::golden_case` (src/fuzzing.rs), shared with the seeded mutation run of
//! `tests/fuzz_corpus.rs`. Errors from the code under test are fine; a panic, or a bug the
//! body reports as `Err`, is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = vidrt::fuzzing::golden_case(data) {
        panic!("{e}");
    }
});
