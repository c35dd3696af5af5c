//! Supervised daemons (dnsmasq, haproxy).
//!
//! [`Procs`] is the OS facility: start a daemonising program (optionally inside a named
//! namespace), read a process's command line, signal it, list a namespace's processes.
//! [`ProcessManager`] is the one place that supervises a [`Daemon`] described by its argument
//! vector and pid file (Neutron's `external_process.ProcessManager`): it starts it when it is
//! not running (respawn), restarts it when its command line must change, sends SIGHUP when
//! only its files changed, and stops it on delete.
//!
//! Every daemon has a log file of its own ([`Daemon::log`]): what the starting process prints
//! (a daemon's start-up errors) is appended to it, and the file is open as descriptor
//! [`LOG_FD`] in the daemon, for daemons that log to a descriptor (haproxy's `log fd@9`, which
//! keeps working after it daemonised and closed its standard streams). [`LogWatch`] reads what
//! a daemon logged after a given moment, so callers can verify it loaded its files. Daemons
//! run as the agent's own user ([`agent_user`]): they read files the agent wrote, wherever its
//! state directory is and whatever its mode.
//!
//! Daemons daemonise and write their pid file, so they outlive an agent restart (DHCP keeps
//! answering) and are adopted again by the next agent from the pid file. A pid is only ever
//! signalled when `/proc/PID/cmdline` proves it is our daemon (same program, and our pid file
//! on its command line), so a recycled pid is never killed by mistake.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::HostError;
use crate::exec::{run, show};

/// The descriptor a daemon's log file is open as in the daemon (haproxy: `log fd@9`).
pub const LOG_FD: i32 = 9;

/// A daemon's log is rotated when it grows past this size (one old copy, `<log>.1`, kept).
pub const LOG_MAX_BYTES: u64 = 10 << 20;

/// Rotates `log` when it is larger than `max` bytes: its content goes to `<log>.1` (replacing
/// the previous one) and it is truncated in place. Daemons write to it in append mode (dnsmasq
/// opens it so, haproxy's descriptor is opened so by [`Procs::start`]), so they go on writing
/// at its new end without being told; lines written between the copy and the truncation are
/// lost. True when it rotated.
pub fn rotate_log(log: &Path, max: u64) -> Result<bool, HostError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| HostError::Io { op, path, source }
    };
    match std::fs::metadata(log) {
        Ok(m) if m.len() > max => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("reading", log)(e)),
    }
    let mut old = log.as_os_str().to_owned();
    old.push(".1");
    let old = PathBuf::from(old);
    std::fs::copy(log, &old).map_err(io("copying", log))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)
        .and_then(|f| f.set_len(0))
        .map_err(io("truncating", log))?;
    Ok(true)
}

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
    /// `netns` when given. With `log`, the program's output is appended to that file, which
    /// is also open as [`LOG_FD`] in the program (and the daemon it leaves behind).
    fn start(
        &self,
        netns: Option<&str>,
        argv: &[String],
        log: Option<&Path>,
    ) -> Result<(), HostError>;
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
    fn start(
        &self,
        netns: Option<&str>,
        argv: &[String],
        log: Option<&Path>,
    ) -> Result<(), HostError> {
        let mut full: Vec<&str> = Vec::new();
        if let Some(ns) = netns {
            full.extend(["ip", "netns", "exec", ns]);
        }
        full.extend(argv.iter().map(String::as_str));
        match log {
            None => run(&full).map(|_| ()),
            Some(log) => start_logged(&full, log),
        }
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

fn open_log(log: &Path) -> Result<std::fs::File, HostError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|source| HostError::Io {
            op: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(log)
        .map_err(|source| HostError::Io {
            op: "opening",
            path: log.to_path_buf(),
            source,
        })
}

/// Runs `argv` with its output captured and appended to `log`, and `log` open as [`LOG_FD`].
fn start_logged(argv: &[&str], log: &Path) -> Result<(), HostError> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::process::CommandExt as _;
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| HostError::Invalid("empty command".into()))?;
    let mut file = open_log(log)?;
    let fd = file.as_raw_fd();
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args).stdin(std::process::Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec and only calls dup2(2)
    // and fcntl(2), which are async-signal-safe; `fd` stays open in the parent until the
    // child exited.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec: clear it by hand in that case.
            let rc = if fd == LOG_FD {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, LOG_FD)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().map_err(|source| HostError::Spawn {
        cmd: show(argv),
        source,
    })?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let stderr = text.trim().to_string();
    if !stderr.is_empty() || !out.status.success() {
        // Best effort: the log is for the operator; the error below carries the same text.
        let _ = writeln!(
            file,
            "neutrino-agent: `{}` ({}):\n{}",
            show(argv),
            out.status,
            stderr
        );
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(HostError::Failed {
            cmd: show(argv),
            status: out.status.to_string(),
            stderr,
        })
    }
}

/// The names of the agent's effective user and group, which daemons run as (dnsmasq's
/// `--user`/`--group`): they read the files the agent wrote, whatever the mode of its state
/// directory. Neutron runs its metadata haproxies as the agent's user the same way
/// (`metadata_proxy_user` defaults to it). `("root", "root")` when the names are unknown and
/// the agent runs as root.
pub fn agent_user() -> (String, String) {
    // SAFETY: geteuid(2)/getegid(2) take no arguments and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let user = name_of("/etc/passwd", uid).unwrap_or_else(|| uid.to_string());
    let group = name_of("/etc/group", gid).unwrap_or_else(|| gid.to_string());
    (user, group)
}

/// The name with numeric id `id` (third field) in a passwd/group style file.
fn name_of(file: &str, id: u32) -> Option<String> {
    if id == 0 {
        return Some("root".into());
    }
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id_field = f.nth(1)?;
        (id_field.parse::<u32>().ok()? == id).then(|| name.to_string())
    })
}

/// Reads what a log file received after the moment the watch was made (a daemon's log,
/// before it is signalled or started), to verify what the daemon did.
#[derive(Debug, Clone)]
pub struct LogWatch {
    path: PathBuf,
    from: u64,
}

impl LogWatch {
    /// A watch of `path` from its current end (the start when it does not exist yet).
    pub fn at_end(path: &Path) -> Self {
        let from = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        LogWatch {
            path: path.to_path_buf(),
            from,
        }
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What was appended since the watch began (everything, when the file was truncated or
    /// replaced meanwhile).
    pub fn since(&self) -> String {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let from = if len < self.from { 0 } else { self.from };
        let mut buf = Vec::new();
        if f.seek(std::io::SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
            return String::new();
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Polls [`LogWatch::since`] until `judge` gives a verdict or `timeout` passed (None).
    pub fn wait<T>(
        &self,
        timeout: Duration,
        mut judge: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(v) = judge(&self.since()) {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
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
    /// Its log file: start-up output is appended to it, and it is open as [`LOG_FD`] in the
    /// daemon.
    pub log: Option<PathBuf>,
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
        if let Some(log) = &d.log {
            // A log that cannot be rotated is no reason to stop supervising the daemon.
            match rotate_log(log, LOG_MAX_BYTES) {
                Ok(true) => tracing::info!(log = %log.display(), "daemon log rotated"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot rotate a daemon log"),
            }
        }
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
                self.start(d)?;
                Ok(DaemonAction::Restarted)
            }
            None => {
                self.start(d)?;
                Ok(DaemonAction::Started)
            }
        }
    }

    /// Starts `d`; a daemon with a log that fails to start is a [`HostError::Daemon`] with
    /// what it printed (its whole command line is in its log).
    fn start(&self, d: &Daemon) -> Result<(), HostError> {
        let r = self
            .procs
            .start(d.netns.as_deref(), &d.argv, d.log.as_deref());
        match (r, &d.log) {
            (Err(HostError::Failed { status, stderr, .. }), Some(log)) => Err(HostError::Daemon {
                program: program_name(d.argv.first().map(String::as_str).unwrap_or_default())
                    .to_string(),
                reason: format!("failed to start ({status}): {stderr}"),
                log: log.clone(),
            }),
            (r, _) => r,
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
            log: None,
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
    fn logged_start_appends_output_and_passes_the_log_descriptor() {
        let dir = std::env::temp_dir().join(format!("neutrino-procs3-{}", std::process::id()));
        let log = dir.join("sub").join("daemon.log");
        let argv = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        RealProcs
            .start(None, &argv("echo started; echo from-fd-9 >&9"), Some(&log))
            .unwrap();
        let watch = LogWatch::at_end(&log);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("from-fd-9"), "{text}");
        assert!(text.contains("started"), "{text}");
        let e = RealProcs
            .start(None, &argv("echo cannot bind >&2; exit 3"), Some(&log))
            .unwrap_err();
        assert!(e.to_string().contains("cannot bind"), "{e}");
        // Only what came after the watch began.
        let after = watch.since();
        assert!(
            after.contains("cannot bind") && !after.contains("from-fd-9"),
            "{after}"
        );
        assert_eq!(
            watch.wait(Duration::from_millis(10), |t| t
                .contains("cannot bind")
                .then_some(1)),
            Some(1)
        );
        assert_eq!(
            watch.wait(Duration::from_millis(10), |t| t
                .contains("nope")
                .then_some(1)),
            None
        );
        crate::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn logs_rotate_past_their_size_and_writers_go_on_at_the_start() {
        use std::io::Write as _;
        let dir = std::env::temp_dir().join(format!("neutrino-procs4-{}", std::process::id()));
        let log = dir.join("daemon.log");
        assert!(!rotate_log(&log, 10).unwrap());
        // A daemon's append-mode descriptor, open across the rotation.
        let mut w = open_log(&log).unwrap();
        w.write_all(b"0123456789\n").unwrap();
        assert!(!rotate_log(&log, 11).unwrap());
        assert!(rotate_log(&log, 10).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join("daemon.log.1")).unwrap(),
            "0123456789\n"
        );
        w.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "after\n");
        crate::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn daemons_run_as_the_agents_user() {
        // SAFETY: geteuid(2) cannot fail.
        let uid = unsafe { libc::geteuid() };
        let (user, group) = agent_user();
        if uid == 0 {
            assert_eq!((user.as_str(), group.as_str()), ("root", "root"));
        } else {
            assert!(!user.is_empty() && !group.is_empty());
        }
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
