//! The wgpu backend (in progress: see issue 7).
