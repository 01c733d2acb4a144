//! UTF-8 text → `vidrt_ir::text::parse`. A graph that parses must verify, and printing it and
//! parsing the print must give the same graph (and the same text again). Errors are fine; a
//! panic or a failed round trip is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vidrt_ir::{text, verify};

fuzz_target!(|data: &[u8]| {
    // Parsing is linear but inference per node is not free: keep each input quick.
    if data.len() > 10 * 1024 {
        return;
    }
    let Ok(src) = std::str::from_utf8(data) else { return };
    let Ok(g) = text::parse(src) else { return };
    if let Err(e) = verify(&g) {
        panic!("parse accepted a graph that does not verify: {e}\n--- input ---\n{src}");
    }
    let printed = text::print(&g);
    let back = match text::parse(&printed) {
        Ok(b) => b,
        Err(e) => panic!("round trip: the printed graph does not parse: {e}\n--- printed ---\n{printed}"),
    };
    let reprinted = text::print(&back);
    assert_eq!(printed, reprinted, "round trip: print(parse(print(g))) != print(g)");
    assert_eq!(back.outputs, g.outputs, "round trip: outputs differ");
    // Compared through `Debug`: exact for every f64 (as `{:?}` is), and NaN equals NaN there.
    let (a, b) = (format!("{:?}", g.nodes), format!("{:?}", back.nodes));
    assert!(a == b, "round trip: nodes differ\n--- printed ---\n{printed}\n--- before ---\n{a}\n--- after ---\n{b}");
});
