//! Desired DHCP servers: the namespace, the port's device and addresses, dnsmasq's command
//! line and files — rendered purely from the host model.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::DhcpConfig;
use crate::model::dhcp::ServerDhcp;
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
    /// User dnsmasq runs as (`--user`): the agent's own, so it can read the files the agent
    /// wrote whatever the state directory's mode ([`neutrino_host::procs::agent_user`]).
    pub user: String,
    /// Its group (`--group`).
    pub group: String,
}

impl DhcpSettings {
    /// Settings with `cfg` and `dir`, dnsmasq running as the agent's own user.
    pub fn new(cfg: DhcpConfig, dir: PathBuf) -> Self {
        let (user, group) = neutrino_host::procs::agent_user();
        DhcpSettings {
            cfg,
            dir,
            user,
            group,
        }
    }
}

/// dnsmasq's log file in a network's directory (`--log-facility`).
pub const LOG_FILE: &str = "dnsmasq.log";

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
    /// dnsmasq's log, `<dir>/dnsmasq.log`.
    pub log: PathBuf,
    /// dnsmasq's files.
    pub files: Files,
    /// The ports whose entries those files hold (all but the DHCP port itself, on a served
    /// subnet), each with a fingerprint of its entry (MAC and addresses): reported dhcp-ready
    /// once dnsmasq has them.
    pub ready: Vec<(String, String)>,
}

/// The agent's options with what the server sent for the network put over them.
fn effective(cfg: &DhcpConfig, server: Option<&ServerDhcp>) -> DhcpConfig {
    let mut c = cfg.clone();
    if let Some(sv) = server {
        if let Some(l) = sv.lease_duration {
            c.lease_duration = l;
        }
        if let Some(d) = &sv.domain {
            c.domain.clone_from(d);
        }
    }
    c
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

/// dnsmasq's command line (Neutron's `Dnsmasq._build_cmdline_callback`), plus `--user` and
/// `--group` (the agent's: Neutron leaves dnsmasq to drop to `nobody`, which cannot read
/// files under a state directory it cannot traverse, such as one in `/root`) and its log
/// file with DHCP transactions (Neutron's `--log-facility`/`--log-dhcp` under
/// `dnsmasq_base_log_dir`; always on here, in the network's directory).
fn argv(
    net: &Network,
    subnets: &[&Subnet],
    dir: &Path,
    ns_dev: &str,
    cfg: &DhcpConfig,
    s: &DhcpSettings,
) -> Vec<String> {
    let f = |name: &str| dir.join(name).display().to_string();
    let mut a: Vec<String> = vec![
        "dnsmasq".into(),
        "--no-hosts".into(),
        "--no-resolv".into(),
        format!("--user={}", s.user),
        format!("--group={}", s.group),
        format!("--log-facility={}", f(LOG_FILE)),
        "--log-dhcp".into(),
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
    // DHCPv6 options always take `option6:` (dnsmasq ignores a bare number there); IPv4
    // numeric codes stand alone, names take `option:`.
    if v6 {
        format!("option6:{name}")
    } else if name.chars().all(|c| c.is_ascii_digit()) {
        name.to_string()
    } else {
        format!("option:{name}")
    }
}

/// Option names that are dnsmasq's client identifier, not an option to send.
const CLIENT_ID: &[&str] = &["client-id", "61"];

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
        let mut tagged_only = false;
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
                // Stateless DHCPv6 hands out no address, but the port's own options need
                // its MAC tagged.
                if !tag.is_empty() && !tagged_only {
                    tagged_only = true;
                    let _ = writeln!(out.host, "{},{}", p.mac, tag.trim_end_matches(','));
                }
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
        let versions: Vec<u8> = p
            .fixed_ips
            .iter()
            .map(|(_, ip)| if ip.is_ipv6() { 6 } else { 4 })
            .collect();
        for o in &p.extra_dhcp_opts {
            // An option of a version the port has no address of has no client to go to.
            if CLIENT_ID.contains(&o.name.as_str()) || !versions.contains(&o.ip_version) {
                continue;
            }
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
        let cfg = effective(&s.cfg, m.dhcp_server.get(&net.id));
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
                argv: argv(net, &subnets, &dir, &ns_dev, &cfg, s),
                log: dir.join(LOG_FILE),
                files: files(&subnets, d, port, &cfg),
                ready: d
                    .ports
                    .iter()
                    .filter(|p| p.id != port.id)
                    .filter(|p| {
                        p.fixed_ips
                            .iter()
                            .any(|(sid, _)| subnets.iter().any(|s| &s.id == sid))
                    })
                    .map(|p| {
                        let ips: Vec<String> =
                            p.fixed_ips.iter().map(|(_, ip)| ip.to_string()).collect();
                        (p.id.clone(), format!("{} {}", p.mac, ips.join(",")))
                    })
                    .collect(),
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
            user: "root".into(),
            group: "root".into(),
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
            "dnsmasq --no-hosts --no-resolv --user=root --group=root \
             --log-facility=/st/dhcp/{NET}/dnsmasq.log --log-dhcp --pid-file=/st/dhcp/{NET}/pid \
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

    fn v6_subnet(id: &str, cidr: &str, mode: &str) -> Subnet {
        Subnet {
            id: id.into(),
            cidr: cidr.parse().unwrap(),
            gateway_ip: None,
            enable_dhcp: true,
            dns_nameservers: vec!["2001:db8::53".into()],
            host_routes: vec![],
            ipv6_address_mode: Some(mode.into()),
            ipv6_ra_mode: Some(mode.into()),
        }
    }

    #[test]
    fn ipv6_modes_render_like_neutron() {
        const S6F: &str = "66666666-0000-0000-0000-00000000000f";
        const S6L: &str = "66666666-0000-0000-0000-00000000000l";
        const S6S: &str = "66666666-0000-0000-0000-00000000000s";
        const V6VM: &str = "bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee";
        let mut m = model();
        m.networks.get_mut(NET).unwrap().subnets.extend([
            v6_subnet(S6F, "2001:db8:1::/64", "dhcpv6-stateful"),
            v6_subnet(S6L, "2001:db8:2::/64", "dhcpv6-stateless"),
            v6_subnet(S6S, "2001:db8:3::/64", "slaac"),
        ]);
        let d = m.dhcp.get_mut(NET).unwrap();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        // The instance: one address per subnet (its SLAAC and stateless ones it makes itself).
        d.ports[1].fixed_ips.extend([
            (S6F.to_string(), ip("2001:db8:1::5")),
            (S6L.to_string(), ip("2001:db8:2:0:f816:3eff:fe00:5")),
            (S6S.to_string(), ip("2001:db8:3:0:f816:3eff:fe00:5")),
        ]);
        // An IPv6-only instance on the stateless subnet with options of its own.
        let mut v6vm = port(V6VM, "fa:16:3e:00:00:06", "10.0.0.6", "compute:nova");
        v6vm.fixed_ips = vec![(S6L.to_string(), ip("2001:db8:2:0:f816:3eff:fe00:6"))];
        for (name, value, v) in [
            ("23", "[2001:db8::99]", 6),
            ("bootfile-url", "http://x/", 6),
            ("tftp-server", "10.0.0.9", 4), // no IPv4 address: dropped
            ("client-id", "abc", 6),        // dnsmasq's client id, not an option
        ] {
            v6vm.extra_dhcp_opts.push(DhcpOpt {
                name: name.into(),
                value: value.into(),
                ip_version: v,
            });
        }
        d.ports.push(v6vm);
        let dhcp_v6 = [
            (S6F.to_string(), ip("2001:db8:1::2")),
            (S6L.to_string(), ip("2001:db8:2:0:f816:3eff:fe00:2")),
        ];
        d.ports[0].fixed_ips.extend(dhcp_v6.clone());
        d.dhcp_port.as_mut().unwrap().fixed_ips.extend(dhcp_v6);
        let out = render(&m, &settings(Path::new("/st")));
        let x = &out[NET];
        let argv = x.argv.join(" ");
        // Stateful and stateless subnets get a static range (addresses only from the hosts
        // file; information requests answered); SLAAC none; and no router advertisements
        // from the DHCP side, which Neutron leaves to the router.
        assert!(
            argv.contains(&format!(
                "--dhcp-range=set:subnet-{S6F},2001:db8:1::,static,64,86400s"
            )),
            "{argv}"
        );
        assert!(
            argv.contains(&format!(
                "--dhcp-range=set:subnet-{S6L},2001:db8:2::,static,64,86400s"
            )),
            "{argv}"
        );
        assert!(!argv.contains(S6S), "{argv}");
        assert!(
            !argv.contains("enable-ra") && !argv.contains("ra-"),
            "{argv}"
        );
        assert_eq!(
            x.addrs,
            [
                "10.0.0.2/24",
                "2001:db8:1::2/64",
                "2001:db8:2:0:f816:3eff:fe00:2/64"
            ]
        );
        // Hosts: the stateful address leased; stateless and SLAAC ones not, but a port with
        // options of its own is tagged for them (once).
        assert_eq!(
            x.files.host,
            format!(
                "fa:16:3e:00:00:05,set:port-{VM},host-10-0-0-5.openstacklocal,10.0.0.5\n\
                 fa:16:3e:00:00:05,set:port-{VM},host-2001-db8-1--5.openstacklocal,[2001:db8:1::5]\n\
                 fa:16:3e:00:00:05,set:port-{VM}\n\
                 fa:16:3e:00:00:06,set:port-{V6VM}\n\
                 fa:16:3e:00:00:02,host-10-0-0-2.openstacklocal,10.0.0.2\n\
                 fa:16:3e:00:00:02,host-2001-db8-1--2.openstacklocal,[2001:db8:1::2]\n"
            )
        );
        // Options: DNS and search domain for both DHCPv6 subnets, nothing for SLAAC, no
        // IPv4-only options on IPv6 subnets; port options as option6:.
        let opts = &x.files.opts;
        for sub in [S6F, S6L] {
            assert!(
                opts.contains(&format!(
                    "tag:subnet-{sub},option6:dns-server,[2001:db8::53]\n\
                     tag:subnet-{sub},option6:domain-search,openstacklocal\n"
                )),
                "{opts}"
            );
        }
        assert!(!opts.contains(S6S), "{opts}");
        assert!(
            opts.ends_with(&format!(
                "tag:port-{VM},option:tftp-server,10.0.0.9\n\
                 tag:port-{V6VM},option6:23,[2001:db8::99]\n\
                 tag:port-{V6VM},option6:bootfile-url,http://x/\n"
            )),
            "{opts}"
        );
    }

    #[test]
    fn the_servers_lease_duration_and_domain_win() {
        let mut m = model();
        m.dhcp_server.insert(
            NET.into(),
            ServerDhcp {
                lease_duration: Some(-1),
                domain: Some("example.org".into()),
            },
        );
        let x = &render(&m, &settings(Path::new("/st")))[NET];
        let argv = x.argv.join(" ");
        assert!(argv.contains(",255.255.255.0,infinite "), "{argv}");
        assert!(argv.ends_with("--domain=example.org"), "{argv}");
        assert!(x.files.host.contains("host-10-0-0-5.example.org,"));
        // Nothing from the server (an older one): the agent's own options.
        m.dhcp_server.insert(NET.into(), ServerDhcp::default());
        let argv = render(&m, &settings(Path::new("/st")))[NET].argv.join(" ");
        assert!(argv.contains(",86400s ") && argv.ends_with("--domain=openstacklocal"));
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
