//! Files the agent keeps in its state directory (seen tools and servers,
//! the server inventory, spool cursors), each rewritten whole, readable by
//! root only.

use std::{
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// Writes `bytes` to `path` through a temporary file and a rename, so that
/// a crash leaves the old file or the new one, never half of one. The file
/// is the agent's only (mode 0600, whatever the umask).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Writes `bytes` to `path`, mode 0600 (an existing file is made 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn state_files_are_the_agents_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.json");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        write_atomically(&dir.path().join("inventory.json"), b"{}").unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("inventory.json")).unwrap().mode() & 0o777,
            0o600
        );
    }
}
