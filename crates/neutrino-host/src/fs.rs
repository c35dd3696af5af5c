//! Files: the agent's state directory, written atomically, and every other file neutrino's
//! host side reads or writes (the `neutrino` binary's private files, `clouds.yaml`, lease
//! files, `/proc/sys/kernel/hostname`).
//!
//! Owns "write to a temporary file in the same directory, then rename" (a reader such as
//! dnsmasq re-reading its hosts file on SIGHUP never sees half a file) and change detection
//! (a file whose content is already right is not rewritten, so its consumer is not reloaded).
//! It is the one place outside this crate's process code that uses `std::fs` (`clippy.toml`
//! bans it elsewhere), so what neutrino does to a host's files can be read in one module.
//! This module must never remove anything outside the directory it is given.

use std::io::Write as _;
use std::path::Path;

use crate::HostError;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> HostError + 'a {
    move |source| HostError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `content` to `path` atomically unless it already holds exactly that; returns
/// whether it wrote. Creates missing parent directories.
pub fn write_if_changed(path: &Path, content: &str) -> Result<bool, HostError> {
    if let Ok(old) = std::fs::read_to_string(path)
        && old == content
    {
        return Ok(false);
    }
    write_atomic(path, content)?;
    Ok(true)
}

/// Writes `content` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, content: &str) -> Result<(), HostError> {
    write_new(path, content, None)
}

/// Writes `content` to `path` like [`write_atomic`], readable and writable by its owner only
/// (mode 0600) from the moment it exists: for passwords and secrets.
pub fn write_private(path: &Path, content: &str) -> Result<(), HostError> {
    write_new(path, content, Some(0o600))
}

fn write_new(path: &Path, content: &str, mode: Option<u32>) -> Result<(), HostError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    if let Some(mode) = mode {
        open.mode(mode);
    }
    let mut f = open.open(&tmp).map_err(io("writing", &tmp))?;
    if let Some(mode) = mode {
        // `mode` at creation is filtered by the umask and ignored for an existing leftover
        // temporary file; set it exactly before any content is written.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(io("chmod", &tmp))?;
    }
    f.write_all(content.as_bytes())
        .map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("renaming onto", path))
}

/// Reads a whole file. The error is `std::io`'s as it is: callers name the file in their own
/// terms (a configuration option, a `clouds.yaml`), and some treat a missing file as normal.
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Creates a directory and its missing parents; existing is success.
pub fn create_dir_all(path: &Path) -> Result<(), HostError> {
    std::fs::create_dir_all(path).map_err(io("creating", path))
}

/// The absolute path of an existing file or directory, symbolic links resolved.
pub fn canonicalize(path: &Path) -> Result<std::path::PathBuf, HostError> {
    std::fs::canonicalize(path).map_err(io("resolving", path))
}

/// Sets a file's permission bits (`chmod`).
pub fn set_mode(path: &Path, mode: u32) -> Result<(), HostError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", path))
}

/// A file's permission bits.
pub fn mode(path: &Path) -> Result<u32, HostError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(io("inspecting", path))?;
    Ok(meta.permissions().mode() & 0o7777)
}

/// Removes a file; missing is success.
pub fn remove_file(path: &Path) -> Result<(), HostError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", path)(e)),
    }
}

/// Removes a directory tree; missing is success.
pub fn remove_dir(path: &Path) -> Result<(), HostError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", path)(e)),
    }
}

/// Names of the entries of a directory; a missing directory has none.
pub fn list_dir(path: &Path) -> Result<Vec<String>, HostError> {
    match std::fs::read_dir(path) {
        Ok(rd) => Ok(rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io("listing", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_changes() {
        let dir = std::env::temp_dir().join(format!("neutrino-fs-{}", std::process::id()));
        let f = dir.join("a/b/hosts");
        assert!(write_if_changed(&f, "x\n").unwrap());
        assert!(!write_if_changed(&f, "x\n").unwrap());
        assert!(write_if_changed(&f, "y\n").unwrap());
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "y\n");
        assert_eq!(list_dir(&dir.join("a")).unwrap(), vec!["b".to_string()]);
        remove_dir(&dir).unwrap();
        remove_dir(&dir).unwrap();
        assert!(list_dir(&dir).unwrap().is_empty());
    }

    #[test]
    fn private_files_are_the_owners_only_even_when_rewritten() {
        let dir = std::env::temp_dir().join(format!("neutrino-fs-priv-{}", std::process::id()));
        let f = dir.join("secret");
        write_private(&f, "s1\n").unwrap();
        assert_eq!(mode(&f).unwrap(), 0o600);
        // A leftover temporary file with loose permissions does not leak its mode.
        write_atomic(&dir.join("secret.tmp"), "junk").unwrap();
        set_mode(&dir.join("secret.tmp"), 0o666).unwrap();
        write_private(&f, "s2\n").unwrap();
        assert_eq!(read_to_string(&f).unwrap(), "s2\n");
        assert_eq!(mode(&f).unwrap(), 0o600);
        assert_eq!(list_dir(&dir).unwrap(), vec!["secret".to_string()]);
        remove_file(&f).unwrap();
        remove_file(&f).unwrap();
        assert!(read_to_string(&f).is_err());
        remove_dir(&dir).unwrap();
    }
}
