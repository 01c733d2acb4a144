//! UTF-8 text → `vidrt_ir::text::parse`; a graph that parses must verify and round-trip
//! through `text::print`.
//!
//! The body is `vidrt::fuzzing::ir_text` (src/fuzzing.rs), shared with the seeded mutation run of
//! `tests/fuzz_corpus.rs`. Errors from the code under test are fine; a panic, or a bug the
//! body reports as `Err`, is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = vidrt::fuzzing::ir_text(data) {
        panic!("{e}");
    }
});
