//! Shared helpers of the fuzz targets.

use std::path::PathBuf;

/// A scratch folder private to this fuzzing process (`/dev/shm` when there is one, so the
/// per-input file writes stay in memory), created once and reused by every input.
pub fn scratch_dir(target: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("vidrt-fuzz-{target}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("fuzz harness: cannot create {}: {e}", dir.display()));
    dir
}
