//! Link events: wakes the agent when a device appears or goes (an instance's tap plugged),
//! so wiring does not wait for the next periodic pass.
//!
//! Owns one `ip -o monitor link` child process and the thread reading it. Dropping the
//! [`LinkMonitor`] kills and reaps the child. Events carry no data on purpose: the agent
//! reacts by reconciling (level-triggered), not by interpreting the event.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use crate::HostError;

/// A running link monitor.
pub struct LinkMonitor {
    child: Child,
}

impl LinkMonitor {
    /// Starts `ip -o monitor link` in the caller's namespace; `on_event` runs (on a helper
    /// thread) for every event line; `on_end` when the monitor stops.
    pub fn spawn(
        on_event: impl Fn() + Send + 'static,
        on_end: impl FnOnce() + Send + 'static,
    ) -> Result<Self, HostError> {
        let mut child = Command::new("ip")
            .args(["-o", "monitor", "link"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| HostError::Spawn {
                cmd: "ip -o monitor link".into(),
                source,
            })?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| HostError::Invalid("ip monitor has no stdout".into()))?;
        std::thread::Builder::new()
            .name("link-monitor".into())
            .spawn(move || {
                for line in BufReader::new(out).lines() {
                    if line.is_err() {
                        break;
                    }
                    on_event();
                }
                on_end();
            })
            .map_err(|source| HostError::Spawn {
                cmd: "link monitor thread".into(),
                source,
            })?;
        Ok(LinkMonitor { child })
    }
}

impl Drop for LinkMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
