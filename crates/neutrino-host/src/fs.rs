//! Files the agent owns under its state directory, written atomically.
//!
//! Owns "write to a temporary file in the same directory, then rename" (a reader such as
//! dnsmasq re-reading its hosts file on SIGHUP never sees half a file) and change detection
//! (a file whose content is already right is not rewritten, so its consumer is not reloaded).
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
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(io("writing", &tmp))?;
    f.write_all(content.as_bytes())
        .map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("renaming onto", path))
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
}
