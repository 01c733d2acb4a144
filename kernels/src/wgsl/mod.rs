//! WGSL generation (in progress: see issue 7).
