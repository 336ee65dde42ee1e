//! metaids-durable: the one way metaids writes an output file. A regular file is written to a
//! temporary sibling (`.NAME.tmp-PID`, or `NAME.partial` for a stream a user may watch), synced, and
//! renamed over the target, then the directory is synced: a reader sees the old file or the whole
//! new one, never half. What is not a regular file is never replaced:
//!
//! * a character device, FIFO or socket (`/dev/stdout`, `/dev/full`, a named pipe) is written
//!   through, and its errors (a full device) are reported;
//! * a symbolic link is followed: the link stays, the file it points to is replaced (a dangling
//!   link's target is created);
//! * a directory is refused.
//!
//! A file dropped without [`DurableFile::commit`] (a failed command) removes its temporary file,
//! so a failed command leaves the file system as it found it. Standard library only; callers wrap
//! the `io::Error`s (which name the path) in their own error types.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// How the temporary file of a regular target is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staging {
    /// `.NAME.tmp-PID`, hidden: a whole file written at once.
    Hidden,
    /// `NAME.partial`, visible: a stream a user may follow while it grows.
    Partial,
}

#[derive(Debug)]
enum Target {
    /// Written to `tmp`, renamed to `path` on commit.
    Replace { path: PathBuf, tmp: PathBuf },
    /// Written straight to `path` (a device, FIFO or socket).
    Through { path: PathBuf },
}

/// An output file being written (see the crate documentation).
#[derive(Debug)]
pub struct DurableFile {
    target: Target,
    /// The path the user named.
    named: PathBuf,
    out: Option<BufWriter<File>>,
    bytes: u64,
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The file a path names, following symbolic links (relative links resolve against the link's
/// directory); a chain longer than 32 links is an error.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..32 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p).map_err(|e| with_path(&p, e))?;
                p = match p.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(io::Error::other(format!(
        "{}: more than 32 symbolic links",
        path.display()
    )))
}

#[cfg(unix)]
fn is_special(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    t.is_char_device() || t.is_fifo() || t.is_socket() || t.is_block_device()
}

#[cfg(not(unix))]
fn is_special(_m: &std::fs::Metadata) -> bool {
    false
}

/// Syncs a directory (best effort: not every platform can open one for syncing).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl DurableFile {
    /// Starts writing `path`, staged as `staging` when it is (or will be) a regular file.
    pub fn create(path: &Path, staging: Staging) -> io::Result<Self> {
        let real = resolve(path)?;
        let target = match std::fs::metadata(&real) {
            Ok(m) if m.is_dir() => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    format!("{}: is a directory, not an output file", path.display()),
                ))
            }
            Ok(m) if is_special(&m) => Target::Through { path: real },
            _ => {
                let dir = real
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let name = real
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("{}: not a file name", path.display()),
                        )
                    })?;
                let tmp = match staging {
                    Staging::Hidden => dir.join(format!(".{name}.tmp-{}", std::process::id())),
                    Staging::Partial => dir.join(format!("{name}.partial")),
                };
                Target::Replace { path: real, tmp }
            }
        };
        let file = match &target {
            Target::Replace { tmp, .. } => File::create(tmp).map_err(|e| with_path(tmp, e))?,
            Target::Through { path } => OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| with_path(path, e))?,
        };
        Ok(DurableFile {
            target,
            named: path.to_path_buf(),
            out: Some(BufWriter::with_capacity(1 << 16, file)),
            bytes: 0,
        })
    }

    /// The path the caller named.
    pub fn path(&self) -> &Path {
        &self.named
    }

    /// Where bytes go until commit (the temporary file, or the special file itself).
    pub fn staging_path(&self) -> &Path {
        match &self.target {
            Target::Replace { tmp, .. } => tmp,
            Target::Through { path } => path,
        }
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and syncs what was written so far (a special file is only flushed).
    pub fn sync(&mut self) -> io::Result<()> {
        let staging = self.staging_path().to_path_buf();
        let through = matches!(self.target, Target::Through { .. });
        if let Some(w) = self.out.as_mut() {
            w.flush().map_err(|e| with_path(&staging, e))?;
            if !through {
                w.get_ref()
                    .sync_data()
                    .map_err(|e| with_path(&staging, e))?;
            }
        }
        Ok(())
    }

    /// Syncs and renames into place (a special file: flushes). After an error the temporary file is
    /// removed and the target is as it was.
    pub fn commit(mut self) -> io::Result<()> {
        self.commit_in_place()
    }

    /// [`DurableFile::commit`] for callers that keep the value (a sink committed at finish).
    pub fn commit_in_place(&mut self) -> io::Result<()> {
        let Some(w) = self.out.take() else {
            return Ok(());
        };
        let staging = self.staging_path().to_path_buf();
        let result = (|| {
            let file = w
                .into_inner()
                .map_err(|e| with_path(&staging, e.into_error()))?;
            match &self.target {
                Target::Through { .. } => Ok(()),
                Target::Replace { path, tmp } => {
                    file.sync_all().map_err(|e| with_path(tmp, e))?;
                    drop(file);
                    std::fs::rename(tmp, path).map_err(|e| with_path(path, e))?;
                    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        sync_dir(dir);
                    }
                    Ok(())
                }
            }
        })();
        if result.is_err() {
            self.discard();
        }
        result
    }

    fn discard(&mut self) {
        self.out = None;
        if let Target::Replace { tmp, .. } = &self.target {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

impl Write for DurableFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let staging = match &self.target {
            Target::Replace { tmp, .. } => tmp,
            Target::Through { path } => path,
        };
        match &mut self.out {
            Some(w) => {
                let n = w.write(buf).map_err(|e| with_path(staging, e))?;
                self.bytes += n as u64;
                Ok(n)
            }
            None => Err(io::Error::other(format!(
                "{}: written after commit",
                self.named.display()
            ))),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let staging = match &self.target {
            Target::Replace { tmp, .. } => tmp,
            Target::Through { path } => path,
        };
        match &mut self.out {
            Some(w) => w.flush().map_err(|e| with_path(staging, e)),
            None => Ok(()),
        }
    }
}

impl Drop for DurableFile {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.discard();
        }
    }
}

/// Writes `bytes` to `path` durably (see the crate documentation).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = DurableFile::create(path, Staging::Hidden)?;
    f.write_all(bytes)?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_regular_file_is_replaced_whole_and_failures_leave_nothing() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("out.json");
        std::fs::write(&p, "old").expect("write");
        let mut f = DurableFile::create(&p, Staging::Partial).expect("create");
        f.write_all(b"new").expect("write");
        f.sync().expect("sync");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "old");
        assert!(d.path().join("out.json.partial").exists());
        f.commit().expect("commit");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "new");
        assert_eq!(names(d.path()), vec!["out.json"]);
        // Dropped without commit (a failed command): the old file stays, no leftover.
        let mut f = DurableFile::create(&p, Staging::Hidden).expect("create");
        f.write_all(b"half").expect("write");
        drop(f);
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "new");
        assert_eq!(names(d.path()), vec!["out.json"]);
        write_atomic(&p, b"atomic").expect("atomic");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "atomic");
        assert!(DurableFile::create(d.path(), Staging::Hidden).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_written_through_and_links_followed() {
        let d = tempfile::tempdir().expect("tmp");
        // /dev/null stays a device; /dev/full reports the full device instead of being replaced.
        write_atomic(Path::new("/dev/null"), b"x").expect("dev null");
        assert!(std::fs::metadata("/dev/null")
            .expect("meta")
            .file_type()
            .is_char_device_like());
        if Path::new("/dev/full").exists() {
            let e = write_atomic(Path::new("/dev/full"), &[0u8; 1 << 17]).expect_err("full");
            assert!(e.to_string().contains("/dev/full"), "{e}");
            assert!(is_special(&std::fs::metadata("/dev/full").expect("meta")));
        }
        // A link keeps pointing at its target, whose content is replaced.
        let target = d.path().join("real.json");
        std::fs::write(&target, "old").expect("write");
        let link = d.path().join("link.json");
        std::os::unix::fs::symlink("real.json", &link).expect("link");
        write_atomic(&link, b"new").expect("through the link");
        assert!(std::fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "new");
        assert_eq!(names(d.path()), vec!["link.json", "real.json"]);
    }

    #[cfg(unix)]
    trait CharDeviceLike {
        fn is_char_device_like(&self) -> bool;
    }

    #[cfg(unix)]
    impl CharDeviceLike for std::fs::FileType {
        fn is_char_device_like(&self) -> bool {
            use std::os::unix::fs::FileTypeExt;
            self.is_char_device()
        }
    }
}
