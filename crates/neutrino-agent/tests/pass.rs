//! Component test: a host state as the server sends it (JSON) → typed model → one pass of
//! the DHCP and L2 reconcilers over the in-memory host. Checks the cross-reconciler order
//! (the DHCP port's veth is created and wired in the same pass, and reported ACTIVE), and
//! that a second pass changes nothing.

use std::sync::Arc;

use neutrino_agent::config::{DhcpConfig, VxlanConfig};
use neutrino_agent::dhcp::{Dhcp, DhcpSettings};
use neutrino_agent::l2::{L2, L2Settings};
use neutrino_agent::model::HostModel;
use neutrino_agent::runner::{Pass, Reconciler, run_pass};
use neutrino_host::Net;
use neutrino_host::fake::{FakeNet, FakeProcs};
use neutrino_wire::{HostState, PortStatus};

const NET: &str = "0c1f3a52-7e44-4d0f-9a1b-2b3c4d5e6f70";
const DPORT: &str = "d1a2b3c4-0000-4000-8000-000000000001";

fn state() -> HostState {
    let port = serde_json::json!({
        "id": DPORT, "network_id": NET, "mac_address": "fa:16:3e:aa:bb:01",
        "device_owner": "network:dhcp", "status": "DOWN", "admin_state_up": true,
        "binding:host_id": "h1", "binding:vif_type": "bridge",
        "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.1.0.2"}]});
    serde_json::from_value(serde_json::json!({
        "protocol": 1, "host": "h1", "seq": 7, "agents": [],
        "ports": [port],
        "networks": [{
            "network": {"id": NET, "mtu": 1450},
            "segments": [{"network_type": "vxlan", "segmentation_id": 1001}],
            "subnets": [{"id": "s1", "cidr": "10.1.0.0/24", "gateway_ip": "10.1.0.1",
                         "enable_dhcp": true, "dns_nameservers": [], "host_routes": []}]}],
        "dhcp": [{"network_id": NET, "agent_id": "a1", "dhcp_port_id": DPORT,
                  "ports": [port]}],
        "security_groups": [],
        "l2pop": [{"network_id": NET, "hosts": [{"host": "h2", "local_ip": "192.0.2.12",
            "ports": [{"port_id": "p2", "mac_address": "fa:16:3e:aa:bb:02",
                       "ip_addresses": ["10.1.0.5"], "device_owner": "compute:nova"}]}]}]
    }))
    .unwrap()
}

#[test]
fn one_pass_builds_dhcp_and_l2_and_the_next_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("neutrino-pass-{}", std::process::id()));
    let net = Arc::new(FakeNet::new());
    let procs = Arc::new(FakeProcs::default());
    let mut recs: Vec<Box<dyn Reconciler>> = vec![
        Box::new(Dhcp::new(
            net.clone(),
            procs.clone(),
            DhcpSettings::new(
                DhcpConfig {
                    domain: "openstacklocal".into(),
                    enable_isolated_metadata: false,
                    dns_servers: vec![],
                    config_file: None,
                    lease_duration: 86400,
                    lease_max: 1 << 24,
                },
                dir.join("dhcp"),
            ),
        )),
        Box::new(L2::new(
            net.clone(),
            L2Settings {
                mappings: Default::default(),
                vxlan: Some(VxlanConfig {
                    local_ip: "192.0.2.11".parse().unwrap(),
                    l2_population: true,
                    arp_responder: true,
                    group: None,
                    udp_dstport: 8472,
                }),
            },
        )),
    ];
    let model = HostModel::from_state(&state());
    assert_eq!(model.seq, 7);
    let mut pass = Pass {
        startup: true,
        ..Pass::default()
    };
    run_pass(&mut recs, &model, &mut pass);
    assert!(pass.failures.is_empty(), "{:?}", pass.failures);
    let tap = net
        .link(None, "tapd1a2b3c4-00")
        .expect("DHCP port's host device");
    assert_eq!(tap.master.as_deref(), Some("brq0c1f3a52-7e"));
    assert_eq!(
        pass.port_status,
        vec![(DPORT.to_string(), PortStatus::Active)]
    );
    let fdb = net.fdb(None, "vxlan-1001").unwrap();
    assert_eq!(fdb.len(), 2, "{fdb:?}");
    assert_eq!(procs.running().len(), 1);

    net.clear_ops();
    let mut again = Pass::default();
    run_pass(&mut recs, &model, &mut again);
    assert!(net.ops().is_empty(), "second pass changed {:?}", net.ops());
    assert!(again.failures.is_empty());
    neutrino_host::fs::remove_dir(&dir).unwrap();
}
