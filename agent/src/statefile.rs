//! Files the agent keeps in its state directory (seen tools and servers,
//! the server inventory, spool cursors), each rewritten whole.

use std::{io, path::Path};

/// Writes `bytes` to `path` through a temporary file and a rename, so that
/// a crash leaves the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
