//! Supervised daemons (dnsmasq now; keepalived and haproxy later).
//!
//! [`Procs`] is the OS facility: start a daemonising program (optionally inside a named
//! namespace), read a process's command line, signal it, list a namespace's processes.
//! [`ProcessManager`] is the one place that supervises a [`Daemon`] described by its argument
//! vector and pid file (Neutron's `external_process.ProcessManager`): it starts it when it is
//! not running (respawn), restarts it when its command line must change, sends SIGHUP when
//! only its files changed, and stops it on delete.
//!
//! Daemons daemonise and write their pid file, so they outlive an agent restart (DHCP keeps
//! answering) and are adopted again by the next agent from the pid file. A pid is only ever
//! signalled when `/proc/PID/cmdline` proves it is our daemon (same program, and our pid file
//! on its command line), so a recycled pid is never killed by mistake.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::HostError;
use crate::exec::run;

/// A signal we send to daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Reload configuration files.
    Hup,
    /// Terminate.
    Term,
    /// Kill.
    Kill,
}

/// Process operations of the host.
pub trait Procs: Send + Sync {
    /// Runs a program that daemonises (returns once the foreground process exited), inside
    /// `netns` when given.
    fn start(&self, netns: Option<&str>, argv: &[String]) -> Result<(), HostError>;
    /// The command line of a live (not zombie) process.
    fn cmdline(&self, pid: u32) -> Option<Vec<String>>;
    /// Sends a signal; a process already gone is success.
    fn signal(&self, pid: u32, sig: Signal) -> Result<(), HostError>;
    /// Processes running in a named namespace.
    fn netns_pids(&self, netns: &str) -> Result<Vec<u32>, HostError>;
}

/// [`Procs`] of the real host.
#[derive(Debug, Clone, Default)]
pub struct RealProcs;

impl Procs for RealProcs {
    fn start(&self, netns: Option<&str>, argv: &[String]) -> Result<(), HostError> {
        let mut full: Vec<&str> = Vec::new();
        if let Some(ns) = netns {
            full.extend(["ip", "netns", "exec", ns]);
        }
        full.extend(argv.iter().map(String::as_str));
        run(&full).map(|_| ())
    }

    fn cmdline(&self, pid: u32) -> Option<Vec<String>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The state follows the parenthesised command name, which may itself hold spaces.
        let state = stat.rsplit_once(") ")?.1.chars().next()?;
        if state == 'Z' || state == 'X' {
            return None;
        }
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let v: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if v.is_empty() { None } else { Some(v) }
    }

    fn signal(&self, pid: u32, sig: Signal) -> Result<(), HostError> {
        let signo = match sig {
            Signal::Hup => libc::SIGHUP,
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        };
        let pid_t = libc::pid_t::try_from(pid)
            .map_err(|_| HostError::Invalid(format!("pid {pid} out of range")))?;
        if pid_t <= 1 {
            return Err(HostError::Invalid(format!("refusing to signal pid {pid}")));
        }
        // SAFETY: kill(2) takes two integers and touches no memory of ours; pid_t > 1, so it
        // never addresses a process group or every process.
        let rc = unsafe { libc::kill(pid_t, signo) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        Err(HostError::Io {
            op: "signalling",
            path: PathBuf::from(format!("/proc/{pid}")),
            source: err,
        })
    }

    fn netns_pids(&self, netns: &str) -> Result<Vec<u32>, HostError> {
        match run(&["ip", "netns", "pids", netns]) {
            Ok(out) => Ok(out
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()),
            Err(e) if e.is_missing() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// A daemon to supervise: its argument vector must make it daemonise and write `pid_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// Namespace to run it in.
    pub netns: Option<String>,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Its pid file (also on its command line: that is how we recognise it).
    pub pid_file: PathBuf,
}

/// What [`ProcessManager::ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonAction {
    /// It was running as wanted.
    Unchanged,
    /// It was running; sent SIGHUP to re-read its files.
    Reloaded,
    /// It was not running (first start or respawn).
    Started,
    /// Its command line had to change: stopped and started.
    Restarted,
}

/// Supervises daemons through a [`Procs`].
pub struct ProcessManager<'a> {
    procs: &'a dyn Procs,
}

fn program_name(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

impl<'a> ProcessManager<'a> {
    /// A manager over `procs`.
    pub fn new(procs: &'a dyn Procs) -> Self {
        ProcessManager { procs }
    }

    /// The pid of the daemon `program` that writes `pid_file`, when it runs; with its
    /// command line.
    pub fn running(&self, program: &str, pid_file: &Path) -> Option<(u32, Vec<String>)> {
        let pid: u32 = std::fs::read_to_string(pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmd = self.procs.cmdline(pid)?;
        let ours = cmd
            .first()
            .is_some_and(|p| program_name(p) == program_name(program))
            && cmd.iter().any(|a| a.contains(&*pid_file.to_string_lossy()));
        ours.then_some((pid, cmd))
    }

    /// Makes `d` run with exactly its command line; `reload` asks for a SIGHUP when it is
    /// already running as wanted (its files changed).
    pub fn ensure(&self, d: &Daemon, reload: bool) -> Result<DaemonAction, HostError> {
        let program = d.argv.first().map(String::as_str).unwrap_or_default();
        match self.running(program, &d.pid_file) {
            Some((pid, cmd)) if cmd.get(1..) == d.argv.get(1..) => {
                if reload {
                    self.procs.signal(pid, Signal::Hup)?;
                    Ok(DaemonAction::Reloaded)
                } else {
                    Ok(DaemonAction::Unchanged)
                }
            }
            Some((pid, _)) => {
                self.terminate(pid)?;
                self.procs.start(d.netns.as_deref(), &d.argv)?;
                Ok(DaemonAction::Restarted)
            }
            None => {
                self.procs.start(d.netns.as_deref(), &d.argv)?;
                Ok(DaemonAction::Started)
            }
        }
    }

    /// Stops the daemon `program` of `pid_file` if it runs, and removes the pid file.
    pub fn stop(&self, program: &str, pid_file: &Path) -> Result<(), HostError> {
        if let Some((pid, _)) = self.running(program, pid_file) {
            self.terminate(pid)?;
        }
        match std::fs::remove_file(pid_file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(HostError::Io {
                op: "removing",
                path: pid_file.to_path_buf(),
                source,
            }),
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after two seconds.
    pub fn terminate(&self, pid: u32) -> Result<(), HostError> {
        self.procs.signal(pid, Signal::Term)?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if self.procs.cmdline(pid).is_none() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.procs.signal(pid, Signal::Kill)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeProcs;

    #[test]
    fn starts_reloads_restarts_and_stops() {
        let dir = std::env::temp_dir().join(format!("neutrino-procs-{}", std::process::id()));
        let pid_file = dir.join("pid");
        let procs = FakeProcs::default();
        let pm = ProcessManager::new(&procs);
        let mut d = Daemon {
            netns: Some("qdhcp-x".into()),
            argv: vec![
                "dnsmasq".into(),
                format!("--pid-file={}", pid_file.display()),
                "--a".into(),
            ],
            pid_file: pid_file.clone(),
        };
        assert_eq!(pm.ensure(&d, false).unwrap(), DaemonAction::Started);
        assert_eq!(pm.ensure(&d, false).unwrap(), DaemonAction::Unchanged);
        assert_eq!(pm.ensure(&d, true).unwrap(), DaemonAction::Reloaded);
        d.argv.push("--b".into());
        assert_eq!(pm.ensure(&d, true).unwrap(), DaemonAction::Restarted);
        // It died: respawned.
        procs.kill_all();
        assert_eq!(pm.ensure(&d, false).unwrap(), DaemonAction::Started);
        pm.stop("dnsmasq", &pid_file).unwrap();
        assert!(pm.running("dnsmasq", &pid_file).is_none());
        assert_eq!(
            procs.signals(),
            vec![Signal::Hup, Signal::Term, Signal::Term]
        );
        crate::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn never_signals_a_foreign_process() {
        let dir = std::env::temp_dir().join(format!("neutrino-procs2-{}", std::process::id()));
        let pid_file = dir.join("pid");
        crate::fs::write_atomic(&pid_file, &format!("{}\n", std::process::id())).unwrap();
        let pm = ProcessManager::new(&RealProcs);
        // Our own test process is not a dnsmasq writing that pid file.
        assert!(pm.running("dnsmasq", &pid_file).is_none());
        pm.stop("dnsmasq", &pid_file).unwrap();
        crate::fs::remove_dir(&dir).unwrap();
    }
}
