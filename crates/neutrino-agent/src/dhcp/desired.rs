//! Desired DHCP servers: the namespace, the port's device and addresses, dnsmasq's command
//! line and files — rendered purely from the host model.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::DhcpConfig;
use crate::model::{DhcpNet, HostModel, Network, Port, Subnet};
use crate::names;

/// The metadata service address routed to the DHCP port on isolated networks.
pub const METADATA_CIDR: &str = "169.254.169.254/32";

/// Device owners of router ports: a subnet with one at its gateway is not isolated.
const ROUTER_OWNERS: &[&str] = &[
    "network:router_interface",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
];

/// The DHCP role's settings plus where its files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpSettings {
    /// Options from the configuration.
    pub cfg: DhcpConfig,
    /// `<state_path>/dhcp`.
    pub dir: PathBuf,
}

/// dnsmasq's files for one network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Files {
    /// `--dhcp-hostsfile`: MAC → host name, address.
    pub host: String,
    /// `--addn-hosts`: DNS names of the ports.
    pub addn_hosts: String,
    /// `--dhcp-optsfile`: per-subnet and per-port options.
    pub opts: String,
}

/// One network's DHCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpInstance {
    /// Network id.
    pub network_id: String,
    /// `qdhcp-<network>`.
    pub netns: String,
    /// The `network:dhcp` port.
    pub port_id: String,
    /// Its MAC.
    pub mac: String,
    /// `tap<port>` on the host.
    pub tap: String,
    /// `ns-<port>` in the namespace.
    pub ns_dev: String,
    /// Addresses of `ns_dev`, `addr/prefix`.
    pub addrs: Vec<String>,
    /// Network MTU (0: unknown).
    pub mtu: u32,
    /// `<dir>/<network>`.
    pub dir: PathBuf,
    /// dnsmasq's command line.
    pub argv: Vec<String>,
    /// dnsmasq's files.
    pub files: Files,
}

fn dash(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn is_isolated(subnet: &Subnet, ports: &[Port]) -> bool {
    !ports.iter().any(|p| {
        ROUTER_OWNERS.contains(&p.device_owner.as_str())
            && p.fixed_ips.iter().any(|(s, ip)| {
                s == &subnet.id && (subnet.gateway_ip.is_none() || subnet.gateway_ip == Some(*ip))
            })
    })
}

/// Whether dnsmasq serves addresses on this subnet (IPv4, or DHCPv6 stateful/stateless, or
/// IPv6 without modes — Neutron's rule).
fn served(s: &Subnet) -> bool {
    s.enable_dhcp
        && match s.cidr {
            ipnet::IpNet::V4(_) => true,
            ipnet::IpNet::V6(n) => {
                n.prefix_len() >= 64
                    && matches!(
                        (s.ipv6_address_mode.as_deref(), s.ipv6_ra_mode.as_deref()),
                        (Some("dhcpv6-stateful" | "dhcpv6-stateless"), _) | (None, None)
                    )
            }
        }
}

fn stateful(s: &Subnet) -> bool {
    match s.cidr {
        ipnet::IpNet::V4(_) => true,
        ipnet::IpNet::V6(_) => s.ipv6_address_mode.as_deref() != Some("dhcpv6-stateless"),
    }
}

fn lease(cfg: &DhcpConfig) -> String {
    if cfg.lease_duration < 0 {
        "infinite".into()
    } else {
        format!("{}s", cfg.lease_duration)
    }
}

/// dnsmasq's command line (Neutron's `Dnsmasq._build_cmdline_callback`).
fn argv(
    net: &Network,
    subnets: &[&Subnet],
    dir: &Path,
    ns_dev: &str,
    cfg: &DhcpConfig,
) -> Vec<String> {
    let f = |name: &str| dir.join(name).display().to_string();
    let mut a: Vec<String> = vec![
        "dnsmasq".into(),
        "--no-hosts".into(),
        "--no-resolv".into(),
        format!("--pid-file={}", f("pid")),
        format!("--dhcp-hostsfile={}", f("host")),
        format!("--addn-hosts={}", f("addn_hosts")),
        format!("--dhcp-optsfile={}", f("opts")),
        format!("--dhcp-leasefile={}", f("leases")),
        "--dhcp-match=set:ipxe,175".into(),
        "--dhcp-userclass=set:ipxe6,iPXE".into(),
        "--local-service".into(),
        "--bind-dynamic".into(),
        format!("--interface={ns_dev}"),
        "--except-interface=lo".into(),
        "--dhcp-authoritative".into(),
    ];
    let mut possible: u128 = 0;
    for s in subnets {
        let tag = format!("set:subnet-{}", s.id);
        match s.cidr {
            ipnet::IpNet::V4(n) => {
                a.push(format!(
                    "--dhcp-range={tag},{},static,{},{}",
                    n.network(),
                    n.netmask(),
                    lease(cfg)
                ));
                possible += 1u128 << (32 - u32::from(n.prefix_len()));
            }
            ipnet::IpNet::V6(n) => {
                a.push(format!(
                    "--dhcp-range={tag},{},static,{},{}",
                    n.network(),
                    n.prefix_len(),
                    lease(cfg)
                ));
                possible += 1u128 << 64;
            }
        }
    }
    if net.mtu > 0 {
        a.push(format!("--dhcp-option-force=option:mtu,{}", net.mtu));
    }
    a.push(format!(
        "--dhcp-lease-max={}",
        possible.min(u128::from(cfg.lease_max))
    ));
    a.push(format!(
        "--conf-file={}",
        cfg.config_file.as_deref().unwrap_or("/dev/null")
    ));
    for s in &cfg.dns_servers {
        a.push(format!("--server={s}"));
    }
    if !cfg.domain.is_empty() {
        a.push(format!("--domain={}", cfg.domain));
    }
    a
}

fn opt_name(name: &str, v6: bool) -> String {
    // Numeric option codes stand alone; names take the `option:`/`option6:` prefix.
    if name.chars().all(|c| c.is_ascii_digit()) {
        name.to_string()
    } else if v6 {
        format!("option6:{name}")
    } else {
        format!("option:{name}")
    }
}

/// The hosts, addn_hosts and opts files (Neutron's `_output_hosts_file`,
/// `_output_addn_hosts_file`, `_output_opts_file`).
fn files(subnets: &[&Subnet], d: &DhcpNet, dhcp_port: &Port, cfg: &DhcpConfig) -> Files {
    let mut out = Files::default();
    let by_id: BTreeMap<&str, &Subnet> = subnets.iter().map(|s| (s.id.as_str(), *s)).collect();
    let mut ports: Vec<&Port> = d.ports.iter().collect();
    ports.sort_by(|a, b| a.id.cmp(&b.id));
    for p in &ports {
        let tag = if p.extra_dhcp_opts.is_empty() {
            String::new()
        } else {
            format!("set:port-{},", p.id)
        };
        for (sid, ip) in &p.fixed_ips {
            let Some(s) = by_id.get(sid.as_str()) else {
                continue;
            };
            let host = format!("host-{}", dash(ip));
            let fqdn = if cfg.domain.is_empty() {
                host.clone()
            } else {
                format!("{host}.{}", cfg.domain)
            };
            let _ = writeln!(out.addn_hosts, "{ip}\t{fqdn} {host}");
            if !stateful(s) {
                continue;
            }
            let shown = match ip {
                IpAddr::V4(v) => v.to_string(),
                IpAddr::V6(v) => format!("[{v}]"),
            };
            let _ = writeln!(out.host, "{},{tag}{fqdn},{shown}", p.mac);
        }
    }
    for s in subnets {
        let tag = format!("tag:subnet-{}", s.id);
        let v6 = matches!(s.cidr, ipnet::IpNet::V6(_));
        let own_ip = dhcp_port
            .fixed_ips
            .iter()
            .find(|(sid, _)| sid == &s.id)
            .map(|(_, ip)| *ip);
        if v6 {
            if !s.dns_nameservers.is_empty() {
                let _ = writeln!(
                    out.opts,
                    "{tag},option6:dns-server,{}",
                    s.dns_nameservers
                        .iter()
                        .map(|d| format!("[{d}]"))
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
            if !cfg.domain.is_empty() {
                let _ = writeln!(out.opts, "{tag},option6:domain-search,{}", cfg.domain);
            }
            continue;
        }
        let dns: Vec<String> = if !s.dns_nameservers.is_empty() {
            s.dns_nameservers.clone()
        } else {
            // dnsmasq itself answers for the network's names and forwards the rest.
            own_ip.map(|ip| vec![ip.to_string()]).unwrap_or_default()
        };
        if !dns.is_empty() {
            let _ = writeln!(out.opts, "{tag},option:dns-server,{}", dns.join(","));
        }
        let mut routes: Vec<(String, String)> = s
            .host_routes
            .iter()
            .filter(|r| r.destination.addr().is_ipv4())
            .map(|r| (r.destination.to_string(), r.nexthop.to_string()))
            .collect();
        if cfg.enable_isolated_metadata
            && is_isolated(s, &d.ports)
            && let Some(ip) = own_ip
        {
            routes.push((METADATA_CIDR.into(), ip.to_string()));
        }
        if !routes.is_empty() {
            // A client that gets option 121 ignores option 3: the default route goes in too.
            if let Some(gw) = s.gateway_ip
                && !routes.iter().any(|(d, _)| d == "0.0.0.0/0")
            {
                routes.push(("0.0.0.0/0".into(), gw.to_string()));
            }
            let list = routes
                .iter()
                .map(|(d, n)| format!("{d},{n}"))
                .collect::<Vec<_>>()
                .join(",");
            let _ = writeln!(out.opts, "{tag},option:classless-static-route,{list}");
            let _ = writeln!(out.opts, "{tag},249,{list}");
        }
        match s.gateway_ip {
            Some(gw) => {
                let _ = writeln!(out.opts, "{tag},option:router,{gw}");
            }
            None => {
                let _ = writeln!(out.opts, "{tag},option:router");
            }
        }
    }
    for p in &ports {
        for o in &p.extra_dhcp_opts {
            let v6 = o.ip_version == 6;
            let _ = writeln!(
                out.opts,
                "tag:port-{},{},{}",
                p.id,
                opt_name(&o.name, v6),
                o.value
            );
        }
    }
    out
}

/// Renders every DHCP server this host should run, by network id.
pub fn render(m: &HostModel, s: &DhcpSettings) -> BTreeMap<String, DhcpInstance> {
    let mut out = BTreeMap::new();
    for d in m.dhcp.values() {
        let (Some(net), Some(port)) = (m.networks.get(&d.network_id), d.dhcp_port.as_ref()) else {
            continue;
        };
        let subnets: Vec<&Subnet> = net.subnets.iter().filter(|s| served(s)).collect();
        if subnets.is_empty() {
            continue;
        }
        let dir = s.dir.join(&net.id);
        let ns_dev = names::ns_dev(&port.id);
        let addrs = port
            .fixed_ips
            .iter()
            .filter_map(|(sid, ip)| {
                let sub = net.subnets.iter().find(|x| &x.id == sid)?;
                Some(format!("{ip}/{}", sub.cidr.prefix_len()))
            })
            .collect();
        out.insert(
            net.id.clone(),
            DhcpInstance {
                network_id: net.id.clone(),
                netns: names::dhcp_ns(&net.id),
                port_id: port.id.clone(),
                mac: port.mac.clone(),
                tap: names::tap(&port.id),
                addrs,
                mtu: net.mtu,
                argv: argv(net, &subnets, &dir, &ns_dev, &s.cfg),
                files: files(&subnets, d, port, &s.cfg),
                ns_dev,
                dir,
            },
        );
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{DhcpOpt, Route, Segment};

    pub(crate) const NET: &str = "11111111-2222-3333-4444-555555555555";
    pub(crate) const SUB: &str = "99999999-2222-3333-4444-555555555555";
    pub(crate) const DPORT: &str = "dddddddd-bbbb-cccc-dddd-eeeeeeeeeeee";
    const VM: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    fn port(id: &str, mac: &str, ip: &str, owner: &str) -> Port {
        Port {
            id: id.into(),
            network_id: NET.into(),
            mac: mac.into(),
            device_owner: owner.into(),
            status: "DOWN".into(),
            admin_state_up: true,
            fixed_ips: vec![(SUB.into(), ip.parse().unwrap())],
            extra_dhcp_opts: vec![],
            host: "h1".into(),
        }
    }

    pub(crate) fn model() -> HostModel {
        let mut m = HostModel::default();
        m.networks.insert(
            NET.into(),
            Network {
                id: NET.into(),
                mtu: 1450,
                segments: vec![Segment::Vxlan(42)],
                subnets: vec![Subnet {
                    id: SUB.into(),
                    cidr: "10.0.0.0/24".parse().unwrap(),
                    gateway_ip: Some("10.0.0.1".parse().unwrap()),
                    enable_dhcp: true,
                    dns_nameservers: vec![],
                    host_routes: vec![Route {
                        destination: "192.0.2.0/24".parse().unwrap(),
                        nexthop: "10.0.0.254".parse().unwrap(),
                    }],
                    ipv6_address_mode: None,
                    ipv6_ra_mode: None,
                }],
            },
        );
        let dport = port(DPORT, "fa:16:3e:00:00:02", "10.0.0.2", "network:dhcp");
        let mut vm = port(VM, "fa:16:3e:00:00:05", "10.0.0.5", "compute:nova");
        vm.extra_dhcp_opts.push(DhcpOpt {
            name: "tftp-server".into(),
            value: "10.0.0.9".into(),
            ip_version: 4,
        });
        m.dhcp.insert(
            NET.into(),
            DhcpNet {
                network_id: NET.into(),
                dhcp_port: Some(dport.clone()),
                ports: vec![dport.clone(), vm],
            },
        );
        m.ports.push(dport);
        m
    }

    pub(crate) fn settings(dir: &Path) -> DhcpSettings {
        DhcpSettings {
            cfg: DhcpConfig {
                domain: "openstacklocal".into(),
                enable_isolated_metadata: true,
                dns_servers: vec!["192.0.2.53".into()],
                config_file: None,
                lease_duration: 86400,
                lease_max: 1 << 24,
            },
            dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn renders_dnsmasq_like_neutron() {
        let out = render(&model(), &settings(Path::new("/st/dhcp")));
        let d = &out[NET];
        assert_eq!(d.netns, format!("qdhcp-{NET}"));
        assert_eq!(d.ns_dev, "ns-dddddddd-bb");
        assert_eq!(d.tap, "tapdddddddd-bb");
        assert_eq!(d.addrs, vec!["10.0.0.2/24"]);
        let argv = d.argv.join(" ");
        let expected = format!(
            "dnsmasq --no-hosts --no-resolv --pid-file=/st/dhcp/{NET}/pid \
             --dhcp-hostsfile=/st/dhcp/{NET}/host --addn-hosts=/st/dhcp/{NET}/addn_hosts \
             --dhcp-optsfile=/st/dhcp/{NET}/opts --dhcp-leasefile=/st/dhcp/{NET}/leases \
             --dhcp-match=set:ipxe,175 --dhcp-userclass=set:ipxe6,iPXE --local-service \
             --bind-dynamic --interface=ns-dddddddd-bb --except-interface=lo --dhcp-authoritative \
             --dhcp-range=set:subnet-{SUB},10.0.0.0,static,255.255.255.0,86400s \
             --dhcp-option-force=option:mtu,1450 --dhcp-lease-max=256 --conf-file=/dev/null \
             --server=192.0.2.53 --domain=openstacklocal"
        );
        assert_eq!(argv, expected);
        assert_eq!(
            d.files.host,
            "fa:16:3e:00:00:05,set:port-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee,host-10-0-0-5.openstacklocal,10.0.0.5\n\
             fa:16:3e:00:00:02,host-10-0-0-2.openstacklocal,10.0.0.2\n"
        );
        assert_eq!(
            d.files.opts,
            format!(
                "tag:subnet-{SUB},option:dns-server,10.0.0.2\n\
                 tag:subnet-{SUB},option:classless-static-route,192.0.2.0/24,10.0.0.254,169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.1\n\
                 tag:subnet-{SUB},249,192.0.2.0/24,10.0.0.254,169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.1\n\
                 tag:subnet-{SUB},option:router,10.0.0.1\n\
                 tag:port-{VM},option:tftp-server,10.0.0.9\n"
            )
        );
        assert!(
            d.files
                .addn_hosts
                .contains("10.0.0.5\thost-10-0-0-5.openstacklocal host-10-0-0-5\n")
        );
    }

    #[test]
    fn router_on_the_subnet_means_no_metadata_route() {
        let mut m = model();
        let d = m.dhcp.get_mut(NET).unwrap();
        d.ports.push(port(
            "r",
            "fa:16:3e:00:00:01",
            "10.0.0.1",
            "network:router_interface",
        ));
        m.networks.get_mut(NET).unwrap().subnets[0]
            .host_routes
            .clear();
        let out = render(&m, &settings(Path::new("/st")));
        assert!(
            !out[NET].files.opts.contains("169.254"),
            "{}",
            out[NET].files.opts
        );
        assert!(!out[NET].files.opts.contains("classless"));
    }

    #[test]
    fn no_dhcp_port_or_subnet_no_server() {
        let mut m = model();
        m.networks.get_mut(NET).unwrap().subnets[0].enable_dhcp = false;
        assert!(render(&m, &settings(Path::new("/st"))).is_empty());
        let mut m = model();
        m.dhcp.get_mut(NET).unwrap().dhcp_port = None;
        assert!(render(&m, &settings(Path::new("/st"))).is_empty());
    }
}
