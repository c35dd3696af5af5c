//! The server's periodic work, in one place: failover off dead agents for every kind of
//! agent binding (DHCP networks, L3 routers; each only when its
//! `allow_automatic_*_failover` is on) every `agent_down_time / 2`, and an hourly trim of
//! the change log.
//!
//! The binary spawns [`run`] once per server. This module sits above the services it calls
//! (`scheduling` and its kinds, `agent_api`'s log retention) and owns no data; nothing may
//! call into it from a request or a service.

use std::time::{Duration, Instant};

use crate::scheduling::Binding;
use crate::{ApiState, agent_api, agents, l3_scheduler, scheduler};

/// The agent bindings failover looks after.
const BINDINGS: [&Binding; 2] = [&scheduler::DHCP, &l3_scheduler::L3];

/// How often the change log is trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(3600);

/// Runs forever. Waits the dead limit once at start (so agents that reported to a server
/// that was down get a chance to report again: Neutron's `wait_down_agents`).
pub async fn run(st: ApiState) {
    let cfg = agents::config(&st);
    let interval =
        Duration::from_secs(u64::try_from((cfg.agent_down_time / 2).max(1)).unwrap_or(1));
    tokio::time::sleep(Duration::from_secs(
        u64::try_from(cfg.agent_down_time.saturating_mul(2)).unwrap_or(150),
    ))
    .await;
    let mut last_trim: Option<Instant> = None;
    loop {
        for b in BINDINGS {
            if let Err(e) = b.check_failover(&st, agents::now_us()).await {
                tracing::error!(error = %e, agent_type = b.agent_type, "failover check failed");
            }
        }
        if last_trim.is_none_or(|t| t.elapsed() > TRIM_EVERY) {
            match agent_api::trim_change_log(&st, agents::now_us()).await {
                Ok(n) if n > 0 => tracing::info!(removed = n, "trimmed the change log"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "trimming the change log failed"),
            }
            last_trim = Some(Instant::now());
        }
        tokio::time::sleep(interval).await;
    }
}
