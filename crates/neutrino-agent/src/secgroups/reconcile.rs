//! Applying the rendered tables: only what changed since the last successful apply, in one
//! `nft -f` transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use neutrino_host::nft::Nft;
use serde_json::Value;

use super::render::{
    BRIDGE_TABLE, INET_TABLE, Rendered, ZONES_MAP, assign_zones, bridges, delta_script,
    full_script, render_zoned,
};
use crate::model::HostModel;
use crate::model::secgroups::SgModel;
use crate::runner::{Pass, Reconciler};

const NAME: &str = "secgroups";

/// The nftables firewall driver.
pub struct SecGroups {
    nft: Arc<dyn Nft>,
    /// What the bridge table holds, as of our last successful apply; None: unknown (start-up,
    /// after a failure), so the next apply replaces the tables wholesale.
    applied: Option<Rendered>,
    /// Conntrack zone of each network's bridge, as applied; None until read back from the
    /// kernel (the first pass), so an agent restart keeps every network's zone.
    zones: Option<BTreeMap<String, u16>>,
    /// When our tables were last seen present (listing a chain costs ~25 ms at 1,000 ports:
    /// nft dumps the ruleset for its cache), so passes in between skip the check.
    seen: Option<std::time::Instant>,
}

/// How long a successful presence check (or apply) vouches for our tables. A table deleted
/// behind our back is rebuilt within this; a failed apply rebuilds at once.
const PRESENCE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The elements of the zones map in `nft -j list map` output.
pub(crate) fn parse_zones(json: &str) -> BTreeMap<String, u16> {
    let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    v.get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("map")?.get("elem")?.as_array())
        .flatten()
        .filter_map(|e| {
            let pair = e.as_array()?;
            let bridge = pair.first()?.as_str()?.to_string();
            let zone = u16::try_from(pair.get(1)?.as_u64()?).ok()?;
            Some((bridge, zone))
        })
        .collect()
}

impl SecGroups {
    /// A reconciler applying through `nft`.
    pub fn new(nft: Arc<dyn Nft>) -> Self {
        SecGroups {
            nft,
            applied: None,
            zones: None,
            seen: None,
        }
    }

    fn sync(&mut self, m: &SgModel, pass: &mut Pass) -> Result<(), neutrino_host::HostError> {
        if self.nft.ensure_bridge_nf()? {
            tracing::info!("bridge netfilter enabled for IPv4/IPv6 (conntrack of bridged traffic)");
        }
        // Our tables are there when their fixed chains are (listing one chain costs
        // milliseconds; `nft list tables` reads the whole ruleset, half a second at 1,000
        // ports). A table of an older layout lacks them and is rebuilt.
        let present = |what: &str| self.nft.list_json(what).is_ok();
        let vouched = self.applied.is_some()
            && self.zones.is_some()
            && self.seen.is_some_and(|t| t.elapsed() < PRESENCE_EVERY);
        let have_inet = vouched || present(&format!("chain {INET_TABLE} zone"));
        if !vouched {
            if have_inet && present(&format!("chain {BRIDGE_TABLE} egress")) {
                self.seen = Some(std::time::Instant::now());
            } else {
                if self.applied.is_some() {
                    tracing::warn!("security group tables missing; rebuilding them");
                }
                self.applied = None;
                self.seen = None;
            }
        }
        let prev = match self.zones.take() {
            Some(z) => z,
            // First pass: the zones a previous run gave (none when the table is new).
            None if have_inet => {
                match self.nft.list_json(&format!("map {INET_TABLE} {ZONES_MAP}")) {
                    Ok(out) => parse_zones(&out),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read conntrack zones back; renumbering");
                        BTreeMap::new()
                    }
                }
            }
            None => BTreeMap::new(),
        };
        let zones = assign_zones(&bridges(m), &prev);
        // Until applied, `prev` stays the truth (a failed apply changed nothing).
        self.zones = Some(prev);
        let want = render_zoned(m, &zones);
        let script = match &self.applied {
            None => Some(full_script(&want)),
            Some(old) => delta_script(old, &want),
        };
        if let Some(script) = script {
            self.applied = None;
            self.seen = None;
            let started = std::time::Instant::now();
            self.nft.apply(&script)?;
            self.seen = Some(std::time::Instant::now());
            tracing::debug!(
                bytes = script.len(),
                elapsed_ms = started.elapsed().as_millis(),
                "nftables security groups applied"
            );
            pass.changes += 1;
        }
        self.applied = Some(want);
        self.zones = Some(zones);
        Ok(())
    }
}

impl Reconciler for SecGroups {
    fn name(&self) -> &'static str {
        NAME
    }

    fn reconcile(&mut self, desired: &HostModel, pass: &mut Pass) {
        if let Err(e) = self.sync(&desired.secgroups, pass) {
            pass.fail(NAME, BRIDGE_TABLE, e);
        }
    }
}

/// `firewall_driver = noop` or `enable_security_group = false`: removes our tables if a
/// previous run left them, and filters nothing.
pub struct SecGroupsDisabled {
    nft: Arc<dyn Nft>,
    done: bool,
}

impl SecGroupsDisabled {
    /// A reconciler removing our tables once.
    pub fn new(nft: Arc<dyn Nft>) -> Self {
        SecGroupsDisabled { nft, done: false }
    }
}

impl Reconciler for SecGroupsDisabled {
    fn name(&self) -> &'static str {
        NAME
    }

    fn reconcile(&mut self, _desired: &HostModel, pass: &mut Pass) {
        if self.done {
            return;
        }
        let r = self.nft.tables().and_then(|tables| {
            let mine: Vec<_> = [INET_TABLE, BRIDGE_TABLE]
                .into_iter()
                .filter(|t| tables.iter().any(|x| x == t))
                .collect();
            if mine.is_empty() {
                return Ok(());
            }
            let script: String = mine.iter().map(|t| format!("delete table {t}\n")).collect();
            pass.changes += 1;
            self.nft.apply(&script)
        });
        match r {
            Ok(()) => self.done = true,
            Err(e) => pass.fail(NAME, BRIDGE_TABLE, e),
        }
    }
}
