//! Running host commands (`ip`, `bridge`, daemons) with argument vectors.
//!
//! Owns the one place where this crate spawns programs and the [`HostError`] that says which
//! command failed and why. Arguments are passed as a vector, never through a shell, so ids and
//! names from the API cannot be interpreted. Every call blocks the calling thread until the
//! command ends: callers on an async runtime run reconcile passes on a blocking thread.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// An operation on the host failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The program could not be started.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Exit status as shown by the OS.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// The program's output could not be understood.
    #[error("cannot parse the output of `{cmd}`: {reason}")]
    Parse {
        /// The command line.
        cmd: String,
        /// What is wrong.
        reason: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted (`writing`, `removing`, ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A request that cannot be carried out as asked (bad name, missing object in a fake).
    #[error("{0}")]
    Invalid(String),
    /// A supervised daemon runs but did not do what it was started or signalled for (it
    /// could not read its files, it exited): the reason as it logged it.
    #[error("{program}: {reason} (log: {})", log.display())]
    Daemon {
        /// The program (`dnsmasq`).
        program: String,
        /// What went wrong.
        reason: String,
        /// Its log file, where the operator reads more.
        log: PathBuf,
    },
}

impl HostError {
    /// The object already exists (EEXIST): success for idempotent creations.
    pub fn is_exists(&self) -> bool {
        match self {
            HostError::Failed { stderr, .. } => {
                stderr.contains("File exists") || stderr.contains("already exists")
            }
            HostError::Invalid(m) => m.contains("exists"),
            _ => false,
        }
    }

    /// The object does not exist (ENOENT/ENODEV): success for idempotent deletions.
    pub fn is_missing(&self) -> bool {
        match self {
            HostError::Failed { stderr, .. } => {
                stderr.contains("Cannot find device")
                    || stderr.contains("No such file or directory")
                    || stderr.contains("No such device")
                    || stderr.contains("does not exist")
                    || stderr.contains("No such process")
            }
            HostError::Invalid(m) => m.contains("no such"),
            _ => false,
        }
    }
}

/// Shows an argument vector as a command line (for messages only; never executed).
pub fn show(argv: &[&str]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains([' ', '"', '\'']) {
                format!("{a:?}")
            } else {
                (*a).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `argv` (program first), returning its stdout; fails with its stderr.
pub fn run(argv: &[&str]) -> Result<String, HostError> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| HostError::Invalid("empty command".into()))?;
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HostError::Spawn {
            cmd: show(argv),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(HostError::Failed {
            cmd: show(argv),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `argv` with `input` on its stdin (`nft -f -`), returning its stdout; fails with its
/// stderr.
pub fn run_stdin(argv: &[&str], input: &str) -> Result<String, HostError> {
    use std::io::Write as _;
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| HostError::Invalid("empty command".into()))?;
    let spawn_err = |source| HostError::Spawn {
        cmd: show(argv),
        source,
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(HostError::Failed {
            cmd: show(argv),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `argv` and parses its stdout as JSON (iproute2's `-j`); empty output is `[]`.
pub fn run_json<T: serde::de::DeserializeOwned + Default>(argv: &[&str]) -> Result<T, HostError> {
    let out = run(argv)?;
    if out.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(&out).map_err(|e| HostError::Parse {
        cmd: show(argv),
        reason: e.to_string(),
    })
}

/// Runs `argv` with the caller's stdin/stdout/stderr and returns its exit code (128 + signal
/// number when a signal ended it), for `neutrino probe exec`.
pub fn run_inherit(argv: &[&str]) -> Result<i32, HostError> {
    use std::os::unix::process::ExitStatusExt as _;
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| HostError::Invalid("empty command".into()))?;
    let st = Command::new(prog)
        .args(args)
        .status()
        .map_err(|source| HostError::Spawn {
            cmd: show(argv),
            source,
        })?;
    Ok(st
        .code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

/// Starts `argv` in its own process group with no terminal and does not wait for it (a
/// background DHCP client). Returns its pid.
pub fn spawn_detached(argv: &[&str]) -> Result<u32, HostError> {
    use std::os::unix::process::CommandExt as _;
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| HostError::Invalid("empty command".into()))?;
    let child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|source| HostError::Spawn {
            cmd: show(argv),
            source,
        })?;
    Ok(child.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_arguments_unambiguously() {
        assert_eq!(show(&["ip", "link", "a b", ""]), "ip link \"a b\" \"\"");
    }

    #[test]
    fn failures_carry_command_and_stderr() {
        let e = run(&["sh", "-c", "echo nope >&2; exit 3"]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("nope"), "{msg}");
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(matches!(run(&[]), Err(HostError::Invalid(_))));
    }

    #[test]
    fn classifies_idempotent_errors() {
        let e = HostError::Failed {
            cmd: "ip link add".into(),
            status: "exit status: 2".into(),
            stderr: "RTNETLINK answers: File exists".into(),
        };
        assert!(e.is_exists());
        assert!(!e.is_missing());
    }
}
