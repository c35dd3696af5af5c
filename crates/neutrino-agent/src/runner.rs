//! Reconcilers and the pass that runs them.
//!
//! A [`Reconciler`] owns one kind of host object (L2 wiring, DHCP servers; security groups
//! and routers later). Each pass hands every reconciler the *latest* desired state
//! ([`HostModel`]) and nothing about what changed: it observes the host, computes the
//! difference and applies it, idempotently (level-triggered). Objects already right cost
//! observations only, never writes; nothing is ever flushed and rebuilt.
//!
//! The runner in `agent.rs` guarantees one pass in flight and coalesces triggers (a change
//! from the server, a link appearing, the periodic timer); a failed pass is retried with
//! exponential backoff. The first pass after start-up also sweeps stale objects carrying our
//! prefixes ([`Pass::startup`]); later passes delete what they no longer want too, but only
//! objects they can prove are theirs.
//!
//! Reconcilers run on a blocking thread (host operations are synchronous commands) and must
//! never do network I/O to the server: what they want to tell it goes into [`Pass`].

use std::fmt;

use neutrino_host::HostError;
use neutrino_wire::{FloatingIpStatus, PortStatus};

use crate::model::HostModel;

/// One failure of a reconcile pass, with the object it concerns.
#[derive(Debug)]
pub struct Failure {
    /// Reconciler.
    pub reconciler: &'static str,
    /// Object (network id, device name, ...).
    pub object: String,
    /// What happened.
    pub error: HostError,
}

/// Every failure of a pass (teardown and apply keep going past failures).
#[derive(Debug, thiserror::Error)]
pub struct ReconcileError(pub Vec<Failure>);

impl fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failure(s):", self.0.len())?;
        for x in &self.0 {
            write!(f, " [{} {}: {}]", x.reconciler, x.object, x.error)?;
        }
        Ok(())
    }
}

/// Input flags and output of one pass.
#[derive(Debug, Default)]
pub struct Pass {
    /// First pass of this process: sweep stale objects with our prefixes.
    pub startup: bool,
    /// Port statuses to report to the server.
    pub port_status: Vec<(String, PortStatus)>,
    /// Floating IP statuses to report to the server (L3).
    pub floating_ip_status: Vec<(String, FloatingIpStatus)>,
    /// Every port whose host entry this host's DHCP servers hold, with a fingerprint of that
    /// entry (MAC and addresses): the loop reports new or changed ones as dhcp-ready.
    pub dhcp_ready: Vec<(String, String)>,
    /// Failures so far.
    pub failures: Vec<Failure>,
    /// Host operations that changed something (for logs and tests).
    pub changes: usize,
}

impl Pass {
    /// Records a failure and keeps going.
    pub fn fail(&mut self, reconciler: &'static str, object: impl Into<String>, error: HostError) {
        let object = object.into();
        tracing::warn!(reconciler, %object, %error, "reconcile step failed");
        self.failures.push(Failure {
            reconciler,
            object,
            error,
        });
    }

    /// Counts a host operation that succeeded; records one that failed (and keeps going).
    /// True when it succeeded.
    pub fn step(
        &mut self,
        reconciler: &'static str,
        object: &str,
        r: Result<(), HostError>,
    ) -> bool {
        match r {
            Ok(()) => {
                self.changes += 1;
                true
            }
            Err(e) => {
                self.fail(reconciler, object, e);
                false
            }
        }
    }

    /// The pass's result.
    pub fn result(&mut self) -> Result<(), ReconcileError> {
        if self.failures.is_empty() {
            Ok(())
        } else {
            Err(ReconcileError(std::mem::take(&mut self.failures)))
        }
    }
}

/// One kind of host object, reconciled level-triggered.
pub trait Reconciler: Send {
    /// Short name for logs.
    fn name(&self) -> &'static str;
    /// Makes the host match `desired` for this kind; records failures in `pass` and keeps
    /// going past them.
    fn reconcile(&mut self, desired: &HostModel, pass: &mut Pass);
}

/// Runs every reconciler in order (their order is their dependency order).
pub fn run_pass(reconcilers: &mut [Box<dyn Reconciler>], desired: &HostModel, pass: &mut Pass) {
    for r in reconcilers.iter_mut() {
        let span = tracing::debug_span!("reconcile", reconciler = r.name());
        let _g = span.enter();
        let started = std::time::Instant::now();
        let changes = pass.changes;
        r.reconcile(desired, pass);
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            changes = pass.changes - changes,
            "reconciled"
        );
    }
}
