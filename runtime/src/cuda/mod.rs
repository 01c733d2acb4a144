//! The CUDA backend (in progress: see issue 5).
