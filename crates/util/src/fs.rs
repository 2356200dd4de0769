//! Whole-file writes that a reader sees complete or not at all.

use std::io;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// How [`write_atomic`] writes a file: its permission bits and whether it is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOptions {
    /// Permission bits of the new file, less the umask; `None` gives `0o666` less the umask,
    /// as [`std::fs::write`] does.
    pub mode: Option<u32>,
    /// Whether the file and then its directory are fsynced, so that the new contents survive
    /// a crash of the machine, not only of the process.
    pub sync: bool,
}

impl FileOptions {
    /// Durable, with the permission bits [`std::fs::write`] gives.
    pub const DURABLE: FileOptions = FileOptions { mode: None, sync: true };
    /// Durable and readable by its owner only (`0o600`): keys, tokens, kubeconfigs.
    pub const PRIVATE: FileOptions = FileOptions { mode: Some(0o600), sync: true };
    /// Without any fsync: the file is still replaced whole (a crash of the process leaves the
    /// old or the new contents), but after a crash of the machine it may hold the old contents
    /// or be empty. For files that only need to outlive the process and are written often
    /// enough that an fsync each time costs.
    pub const UNSYNCED: FileOptions = FileOptions { mode: None, sync: false };

    /// These options with the file's permission bits set to `mode` (less the umask).
    pub const fn mode(self, mode: u32) -> FileOptions {
        FileOptions { mode: Some(mode), ..self }
    }
}

/// Replaces the file at `path` with `contents` atomically: readers see the old file or the new
/// one, never a part.
///
/// The contents go to a temporary file in the same directory (named after `path`, with this
/// process's id and a counter, so that concurrent writers never share one), which is fsynced,
/// renamed over `path`, and then the directory is fsynced so that the rename itself is durable.
/// With [`FileOptions::UNSYNCED`] both fsyncs are skipped. On an error the temporary file
/// is removed; only a crash in the middle of a write can leave one behind. The directory must
/// exist.
pub fn write_atomic(path: &Path, contents: &[u8], options: FileOptions) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let tmp = temp_path(dir, path)?;
    if let Err(e) = write_and_rename(&tmp, path, contents, options) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if options.sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes a directory's entries durable: call it after creating, renaming or removing files in
/// it when that must survive a crash of the machine.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn write_and_rename(tmp: &Path, path: &Path, contents: &[u8], options: FileOptions) -> io::Result<()> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    if let Some(mode) = options.mode {
        open.mode(mode);
    }
    let mut file = open.open(tmp)?;
    file.write_all(contents)?;
    if options.sync {
        file.sync_all()?;
    }
    drop(file);
    std::fs::rename(tmp, path)
}

fn temp_path(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display())));
    };
    let mut tmp = name.to_owned();
    tmp.push(format!(".tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    Ok(dir.join(tmp))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn names(dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn mode_of(path: &Path) -> io::Result<u32> {
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
    }

    #[test]
    fn a_write_leaves_the_contents_and_no_temporary_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("cluster.json");
        write_atomic(&path, b"{}", FileOptions::DURABLE)?;
        assert_eq!(std::fs::read(&path)?, b"{}");
        assert_eq!(names(dir.path())?, ["cluster.json"]);
        Ok(())
    }

    #[test]
    fn a_write_replaces_the_whole_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("STATE");
        write_atomic(&path, b"a much longer first version\n", FileOptions::DURABLE)?;
        write_atomic(&path, b"2\n", FileOptions::DURABLE)?;
        assert_eq!(std::fs::read(&path)?, b"2\n");
        assert_eq!(names(dir.path())?, ["STATE"]);
        Ok(())
    }

    #[test]
    fn a_private_file_is_readable_by_its_owner_only_even_when_it_replaces_another() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("admin.kubeconfig");
        std::fs::write(&path, "old")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        write_atomic(&path, b"secret", FileOptions::PRIVATE)?;
        assert_eq!(mode_of(&path)?, 0o600);
        assert_eq!(std::fs::read(&path)?, b"secret");
        Ok(())
    }

    #[test]
    fn an_unsynced_write_with_a_mode_still_replaces_the_file_whole() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.json");
        write_atomic(&path, b"1", FileOptions::UNSYNCED.mode(0o640))?;
        write_atomic(&path, b"2", FileOptions::UNSYNCED.mode(0o640))?;
        assert_eq!(std::fs::read(&path)?, b"2");
        let mode = mode_of(&path)?;
        assert_eq!(mode & !0o640, 0, "no bit beyond 0o640: {mode:o}");
        assert_eq!(mode & 0o600, 0o600, "the umask leaves the owner's bits: {mode:o}");
        assert_eq!(names(dir.path())?, ["state.json"]);
        Ok(())
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_the_old_contents() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("token");
        write_atomic(&path, b"old", FileOptions::DURABLE)?;
        // A directory where the file should be: the rename fails after the temp file exists.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked)?;
        std::fs::write(blocked.join("inside"), "x")?;
        assert!(write_atomic(&blocked, b"new", FileOptions::DURABLE).is_err());
        assert_eq!(names(dir.path())?, ["blocked", "token"]);
        assert_eq!(std::fs::read(&path)?, b"old");
        Ok(())
    }

    #[test]
    fn a_missing_directory_is_an_error() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let err = write_atomic(&dir.path().join("absent/file"), b"x", FileOptions::DURABLE).expect_err("no dir");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        Ok(())
    }
}
