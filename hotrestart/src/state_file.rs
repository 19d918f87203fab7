//! The state file: written atomically on a graceful exit, read at a cold start.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn state_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::StateFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Reads the file; `Ok(None)` when there is none. Anything but a regular file (a directory, a
/// FIFO that would block, a device) is an error, not read. Temporary files left by a process
/// killed while writing are removed first.
pub(crate) fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    remove_stale_temps(path);
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(state_error(path, format!("cannot read: {e}"))),
    };
    if !meta.is_file() {
        return Err(state_error(
            path,
            format!("is {}, not a state file", describe(&meta.file_type())),
        ));
    }
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_error(path, format!("cannot read: {e}"))),
    }
}

fn describe(ty: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ty.is_dir() {
        "a directory"
    } else if ty.is_fifo() {
        "a FIFO"
    } else if ty.is_socket() {
        "a socket"
    } else if ty.is_block_device() || ty.is_char_device() {
        "a device"
    } else if ty.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

/// Moves a bad state file out of the way (never overwrites it) and returns where it went.
/// Only a regular file (or a symbolic link, which is moved, not its target) is moved: a
/// directory or a device at the state file's path is left where it is.
pub(crate) fn set_aside(path: &Path) -> Result<PathBuf> {
    let meta = fs::symlink_metadata(path)
        .map_err(|e| state_error(path, format!("cannot set aside: {e}")))?;
    let ty = meta.file_type();
    if !(ty.is_file() || ty.is_symlink()) {
        return Err(state_error(
            path,
            format!("is {}: left where it is", describe(&ty)),
        ));
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{stamp}"));
    let aside = PathBuf::from(aside);
    if fs::symlink_metadata(&aside).is_ok() {
        return Err(state_error(
            path,
            format!("cannot set aside: {} exists", aside.display()),
        ));
    }
    fs::rename(path, &aside).map_err(|e| state_error(path, format!("cannot set aside: {e}")))?;
    Ok(aside)
}

/// Where `write_atomic` writes before renaming: `.NAME.tmp-PID` beside the state file.
fn temp_path(dir: &Path, name: &std::ffi::OsStr, pid: u32) -> PathBuf {
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{pid}"));
    dir.join(tmp_name)
}

fn dir_and_name(path: &Path) -> Option<(PathBuf, &std::ffi::OsStr)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    Some((dir, path.file_name()?))
}

/// Removes the temporary files of writers that no longer run (killed in the middle of a write).
fn remove_stale_temps(path: &Path) {
    let Some((dir, name)) = dir_and_name(path) else {
        return;
    };
    let Some(name) = name.to_str() else { return };
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && entry.file_type().is_ok_and(|t| t.is_file()) {
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), "removed the temporary file of an interrupted state file write")
                }
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), "cannot remove the temporary file of an interrupted write: {e}")
                }
            }
        }
    }
}

/// Writes `bytes` to `path` atomically: a 0600 temp file in the same directory, fsync,
/// rename over the old file, fsync the directory. A crash at any point leaves either the old
/// file or the new one, whole.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

/// [`write_atomic`] with another file mode (PID files are world-readable).
pub(crate) fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic_parts(path, &[bytes], mode)
}

/// [`write_atomic`] of a frame given as slices (a snapshot that borrows from the state).
pub(crate) fn write_atomic_parts(path: &Path, parts: &[&[u8]], mode: u32) -> Result<()> {
    let (dir, name) = dir_and_name(path).ok_or_else(|| state_error(path, "is not a file path"))?;
    let tmp = temp_path(&dir, name, std::process::id());
    // A temp file of ours can only be left by an earlier failed write of this process. Whatever
    // is at that path, the new one is created afresh (O_EXCL) and never through a symbolic link.
    let _ = fs::remove_file(&tmp);
    let result = (|| -> io::Result<()> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        let mut out = io::BufWriter::with_capacity(1 << 16, file);
        for part in parts {
            out.write_all(part)?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        fs::File::open(&dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        state_error(path, format!("cannot write: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.state");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.state");
        write_atomic(&path, b"good").unwrap();
        // Make the directory read-only: creating the temp file fails.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o500)).unwrap();
        let result = write_atomic(&path, b"new");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // root ignores directory permissions; nothing to prove here.
            return;
        }
        assert!(result.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"good");
    }

    #[test]
    fn set_aside_moves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.state");
        fs::write(&path, b"garbage").unwrap();
        let aside = set_aside(&path).unwrap();
        assert!(!path.exists());
        assert_eq!(fs::read(aside).unwrap(), b"garbage");
    }

    #[test]
    fn a_symlink_planted_at_the_temp_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.state");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let tmp = temp_path(dir.path(), "app.state".as_ref(), std::process::id());
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_atomic(&path, b"state").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&path).unwrap(), b"state");
    }

    #[test]
    fn temp_files_of_dead_writers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.state");
        fs::write(&path, b"good").unwrap();
        // pid_max is at most 2^22: this pid cannot run.
        let dead = temp_path(dir.path(), "app.state".as_ref(), 4_194_305);
        let live = temp_path(dir.path(), "app.state".as_ref(), 1);
        fs::write(&dead, b"half").unwrap();
        fs::write(&live, b"half").unwrap();
        assert_eq!(read(&path).unwrap().unwrap(), b"good");
        assert!(!dead.exists());
        assert!(live.exists(), "pid 1 runs: its write may be in progress");
    }

    #[test]
    fn a_directory_is_neither_read_nor_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.state");
        fs::create_dir(&path).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        let err = set_aside(&path).unwrap_err().to_string();
        assert!(err.contains("left where it is"), "{err}");
        assert!(path.is_dir());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.state");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("is a FIFO"), "{err}");
    }
}
