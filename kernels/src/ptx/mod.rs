//! PTX generation (in progress: see issue 5).
