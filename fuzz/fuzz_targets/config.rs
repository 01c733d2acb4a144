//! Bytes → the model config readers (up to four documents separated by lines `---`), then
//! graph building at a tiny shape.
//!
//! The body is `vidrt::fuzzing::config` (src/fuzzing.rs), shared with the seeded mutation run of
//! `tests/fuzz_corpus.rs`. Errors from the code under test are fine; a panic, or a bug the
//! body reports as `Err`, is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = vidrt::fuzzing::config(data) {
        panic!("{e}");
    }
});
