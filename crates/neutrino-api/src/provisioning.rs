//! Provisioning blocks (Neutron's): a port on a network served by DHCP agents goes ACTIVE
//! only once its L2 agent has wired it *and* a DHCP agent has loaded its host entry.
//!
//! Without this an instance (or Nova, which boots the guest when the port goes ACTIVE) can
//! send its first DHCPDISCOVER before the network's dnsmasq knows its MAC, is ignored, and
//! retries seconds later. Owns the `provisioning_blocks` rows; must never change a port's
//! status itself — callers do, in the same transaction, from what these functions answer.

use serde_json::Value;
use sqlx::AnyConnection;

use neutrino_core::ApiResult;
use neutrino_core::db::{self, Obj};

use crate::subnets;

/// Waiting for a DHCP agent's dhcp-ready report.
const DHCP: &str = "DHCP";
/// The L2 agent reported the port up while the DHCP block was still there.
const L2_UP: &str = "L2";

/// Device owners that never get a DHCP block (Neutron's `NO_PBLOCKS_TYPES`): unowned ports
/// and the network's own service ports.
const NO_BLOCK_OWNERS: &[&str] = &[
    "",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
    "network:router_interface",
    "network:router_gateway",
    "network:router_centralized_snat",
    "network:dhcp",
    "network:floatingip_agent_gateway",
    "network:router_ha_interface",
    "network:floatingip",
];

fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// Sets or clears the DHCP block of `port`: after it is created, or when an update changed
/// its fixed IPs or MAC (the DHCP agents must load the new entry first).
pub async fn setup_dhcp_block(tx: &mut AnyConnection, port: &Obj) -> ApiResult<()> {
    if NO_BLOCK_OWNERS.contains(&str_of(port, "device_owner")) {
        return Ok(());
    }
    let port_id = str_of(port, "id");
    let mut dhcp_subnet = false;
    for f in port
        .get("fixed_ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(sid) = f.get("subnet_id").and_then(Value::as_str) else {
            continue;
        };
        if let Some(s) = db::get(&mut *tx, &subnets::KIND, sid).await?
            && s.get("enable_dhcp").and_then(Value::as_bool) == Some(true)
        {
            dhcp_subnet = true;
            break;
        }
    }
    let served = dhcp_subnet && {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM network_dhcp_agents WHERE network_id = $1")
                .bind(str_of(port, "network_id"))
                .fetch_one(&mut *tx)
                .await?;
        n > 0
    };
    if served {
        sqlx::query(
            "INSERT INTO provisioning_blocks (port_id, entity) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(port_id)
        .bind(DHCP)
        .execute(&mut *tx)
        .await?;
    } else {
        remove(tx, port_id, DHCP).await?;
    }
    Ok(())
}

async fn remove(tx: &mut AnyConnection, port_id: &str, entity: &str) -> ApiResult<bool> {
    let r = sqlx::query("DELETE FROM provisioning_blocks WHERE port_id = $1 AND entity = $2")
        .bind(port_id)
        .bind(entity)
        .execute(&mut *tx)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// The port's L2 agent reports it wired. True: it may go ACTIVE now; false: a DHCP agent has
/// not loaded it yet (recorded, so [`dhcp_ready`] completes it).
pub async fn l2_up(tx: &mut AnyConnection, port_id: &str) -> ApiResult<bool> {
    let blocked: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM provisioning_blocks WHERE port_id = $1 AND entity = $2",
    )
    .bind(port_id)
    .bind(DHCP)
    .fetch_one(&mut *tx)
    .await?;
    if blocked == 0 {
        return Ok(true);
    }
    sqlx::query(
        "INSERT INTO provisioning_blocks (port_id, entity) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(port_id)
    .bind(L2_UP)
    .execute(&mut *tx)
    .await?;
    Ok(false)
}

/// The port's device went away (DOWN) or the port moved to another host: its L2 agent's
/// "up" no longer counts.
pub async fn l2_down(tx: &mut AnyConnection, port_id: &str) -> ApiResult<()> {
    remove(tx, port_id, L2_UP).await?;
    Ok(())
}

/// A DHCP agent has loaded the port's host entry. True: the port goes ACTIVE now (its L2
/// agent had already reported it up).
pub async fn dhcp_ready(tx: &mut AnyConnection, port_id: &str) -> ApiResult<bool> {
    if !remove(tx, port_id, DHCP).await? {
        return Ok(false);
    }
    remove(tx, port_id, L2_UP).await
}
