//! Typed view of what the server says about the DHCP networks of the host state (its
//! `[DEFAULT] dhcp_lease_duration` and `dns_domain`), read once per state fetch.

use std::collections::BTreeMap;

/// What the server sends about one DHCP network: its `[DEFAULT] dhcp_lease_duration` and
/// `dns_domain`. Where present they win over the agent's own options (in Neutron both
/// processes read them from the one neutron.conf).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerDhcp {
    /// Lease seconds, -1 infinite.
    pub lease_duration: Option<i64>,
    /// Domain of instance host names.
    pub domain: Option<String>,
}

/// The server's DHCP settings per DHCP network of the host state.
pub fn server_settings(st: &neutrino_wire::HostState) -> BTreeMap<String, ServerDhcp> {
    st.dhcp
        .iter()
        .map(|d| {
            let lease_duration = d.dhcp_lease_duration.filter(|l| {
                let ok = *l > 0 || *l == -1;
                if !ok {
                    tracing::warn!(
                        lease = l,
                        "server's dhcp_lease_duration unusable; using ours"
                    );
                }
                ok
            });
            let domain = d
                .dns_domain
                .as_deref()
                .map(|x| x.trim_end_matches('.').to_string());
            (
                d.network_id.clone(),
                ServerDhcp {
                    lease_duration,
                    domain,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_settings_come_from_the_host_state() {
        let st: neutrino_wire::HostState = serde_json::from_value(serde_json::json!({
            "protocol": 1, "host": "h1", "seq": 1, "agents": [], "ports": [], "networks": [],
            "security_groups": [], "l2pop": [],
            "dhcp": [
                {"network_id": "a", "agent_id": "x", "dhcp_port_id": null, "ports": [],
                 "dhcp_lease_duration": 600, "dns_domain": "example.org."},
                {"network_id": "b", "agent_id": "x", "dhcp_port_id": null, "ports": [],
                 "dhcp_lease_duration": 0},
                {"network_id": "c", "agent_id": "x", "dhcp_port_id": null, "ports": []}
            ]
        }))
        .unwrap();
        let s = server_settings(&st);
        assert_eq!(
            s["a"],
            ServerDhcp {
                lease_duration: Some(600),
                domain: Some("example.org".into())
            }
        );
        assert_eq!(s["b"], ServerDhcp::default());
        assert_eq!(s["c"], ServerDhcp::default());
    }
}
