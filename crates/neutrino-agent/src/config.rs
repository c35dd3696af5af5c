//! The agent's configuration: Neutron's agent `.ini` sections and option names.
//!
//! Owns turning merged INI files (`neutrino_ini::Ini`, several `--config-file` like
//! oslo.config) into one typed [`AgentConfig`]: roles, L2 mappings and VXLAN, DHCP options,
//! the server and service credentials. Defaults are Neutron's except where noted (and in
//! `docs/configuration.md`). A malformed value of a known option is fatal and names the
//! section and option; unknown options are the caller's to log ([`KNOWN_OPTIONS`]).
//! This module must never touch the host or the network.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use neutrino_ini::{ConfigError, Ini};

/// An invalid agent configuration.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// A value could not be parsed by the INI layer.
    #[error(transparent)]
    Ini(#[from] ConfigError),
    /// A value is of the wrong form or a required option is missing.
    #[error("[{section}] {key}: {reason}")]
    Invalid {
        /// Section.
        section: &'static str,
        /// Option.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(
    section: &'static str,
    key: &'static str,
    reason: impl Into<String>,
) -> AgentConfigError {
    AgentConfigError::Invalid {
        section,
        key,
        reason: reason.into(),
    }
}

/// The VXLAN settings (`[vxlan]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// Our VTEP address (`local_ip`).
    pub local_ip: IpAddr,
    /// `l2_population`: forwarding entries from the server instead of multicast flooding.
    pub l2_population: bool,
    /// `arp_responder`: VXLAN devices answer ARP from the neighbour entries (`proxy`).
    pub arp_responder: bool,
    /// `vxlan_group`: multicast group used without l2population.
    pub group: Option<String>,
    /// `udp_dstport`.
    pub udp_dstport: u16,
}

/// The DHCP role's settings (dhcp_agent.ini `[DEFAULT]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// `dhcp_domain` (falls back to `dns_domain`): the domain of instance host names.
    pub domain: String,
    /// `enable_isolated_metadata`: route 169.254.169.254 via the DHCP port on networks
    /// without a router.
    pub enable_isolated_metadata: bool,
    /// `dnsmasq_dns_servers`: upstream resolvers dnsmasq forwards to.
    pub dns_servers: Vec<String>,
    /// `dnsmasq_config_file`: extra dnsmasq configuration.
    pub config_file: Option<String>,
    /// `dhcp_lease_duration` seconds (-1: infinite).
    pub lease_duration: i64,
    /// `dnsmasq_lease_max`.
    pub lease_max: u64,
}

/// The L3 role's settings (l3_agent.ini `[DEFAULT]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L3Config {
    /// `agent_mode` (only `legacy` is implemented).
    pub agent_mode: String,
    /// `handle_internal_only_routers`.
    pub handle_internal_only_routers: bool,
}

/// Nova's metadata API, when the proxy forwards there instead of to neutrino's own service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NovaMetadata {
    /// `nova_metadata_host`.
    pub host: String,
    /// `nova_metadata_port` (8775).
    pub port: u16,
    /// `nova_metadata_protocol` (`http`).
    pub protocol: String,
}

impl NovaMetadata {
    /// The service's root URL (an instance's path is appended as is).
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{host}:{}", self.protocol, self.port)
    }
}

/// The metadata proxy's settings (metadata_agent.ini, plus the L3 and DHCP agents' options
/// that decide where haproxy runs). Present when the proxy runs: the `metadata` role, or
/// implied by the `l3` role with `enable_metadata_proxy`, or by the `dhcp` role with
/// `enable_isolated_metadata` or `force_metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataConfig {
    /// `metadata_proxy_shared_secret`: key of the `X-Instance-ID-Signature` HMAC.
    pub shared_secret: String,
    /// `nova_metadata_host` etc.; `None` (no `nova_metadata_host`): neutrino's own service,
    /// `<server>/metadata`.
    pub nova: Option<NovaMetadata>,
    /// `metadata_proxy_socket` (`<state_path>/metadata_proxy`): the proxy's unix socket.
    pub socket: PathBuf,
    /// haproxy in every `qrouter-` namespace (`l3` role and `enable_metadata_proxy`).
    pub routers: bool,
    /// haproxy in the `qdhcp-` namespace of isolated networks (`dhcp` role and
    /// `enable_isolated_metadata`).
    pub isolated: bool,
    /// haproxy in every `qdhcp-` namespace (`dhcp` role and `force_metadata`).
    pub force: bool,
}

/// How the agent reaches the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Identity (Keystone v3) URL, e.g. `http://127.0.0.1:5000/v3`.
    pub identity_url: String,
    /// Network API URL (`http://host:9696`); `None`: from the token's catalog.
    pub server_url: Option<String>,
    /// Service user.
    pub username: String,
    /// Its password.
    pub password: String,
    /// Its project.
    pub project_name: String,
    /// User domain.
    pub user_domain_name: String,
    /// Project domain.
    pub project_domain_name: String,
}

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Host name the agent serves (`--host`, `[DEFAULT] host`, else the machine's).
    pub host: String,
    /// `[DEFAULT] state_path`: our files (dnsmasq configuration, pid files).
    pub state_path: PathBuf,
    /// `[agent] report_interval` seconds (heartbeat).
    pub report_interval: u64,
    /// `[agent] polling_interval` seconds between periodic reconcile passes.
    pub polling_interval: u64,
    /// `[neutrino] full_resync_interval` seconds between unconditional state fetches.
    pub full_resync_interval: u64,
    /// `[agent] availability_zone`.
    pub availability_zone: String,
    /// `[linux_bridge] physical_interface_mappings`: physical network → interface.
    pub interface_mappings: BTreeMap<String, String>,
    /// `[vxlan]` when `enable_vxlan`.
    pub vxlan: Option<VxlanConfig>,
    /// `[securitygroup] enable_security_group` (enforcement arrives with the nftables
    /// reconciler; reported now).
    pub enable_security_group: bool,
    /// `[securitygroup] firewall_driver`.
    pub firewall_driver: String,
    /// The DHCP role, when on (`[neutrino] agent_roles` contains `dhcp`).
    pub dhcp: Option<DhcpConfig>,
    /// The L3 role, when on (`[neutrino] agent_roles` contains `l3`).
    pub l3: Option<L3Config>,
    /// The metadata proxy, when on.
    pub metadata: Option<MetadataConfig>,
    /// The server.
    pub server: ServerConfig,
}

/// Options this module reads, for the "unknown option" report.
pub const KNOWN_OPTIONS: &[(&str, &str)] = &[
    ("DEFAULT", "host"),
    ("DEFAULT", "state_path"),
    ("DEFAULT", "dhcp_domain"),
    ("DEFAULT", "dns_domain"),
    ("DEFAULT", "enable_isolated_metadata"),
    ("DEFAULT", "dnsmasq_dns_servers"),
    ("DEFAULT", "dnsmasq_config_file"),
    ("DEFAULT", "dhcp_lease_duration"),
    ("DEFAULT", "dnsmasq_lease_max"),
    ("DEFAULT", "interface_driver"),
    ("DEFAULT", "dhcp_driver"),
    ("DEFAULT", "agent_mode"),
    ("DEFAULT", "handle_internal_only_routers"),
    ("DEFAULT", "enable_metadata_proxy"),
    ("DEFAULT", "force_metadata"),
    ("DEFAULT", "metadata_proxy_shared_secret"),
    ("DEFAULT", "metadata_proxy_socket"),
    ("DEFAULT", "nova_metadata_host"),
    ("DEFAULT", "nova_metadata_port"),
    ("DEFAULT", "nova_metadata_protocol"),
    ("agent", "report_interval"),
    ("agent", "polling_interval"),
    ("agent", "availability_zone"),
    ("linux_bridge", "physical_interface_mappings"),
    ("vxlan", "enable_vxlan"),
    ("vxlan", "local_ip"),
    ("vxlan", "l2_population"),
    ("vxlan", "arp_responder"),
    ("vxlan", "vxlan_group"),
    ("vxlan", "udp_dstport"),
    ("securitygroup", "firewall_driver"),
    ("securitygroup", "enable_security_group"),
    ("neutrino", "agent_roles"),
    ("neutrino", "server_url"),
    ("neutrino", "identity_url"),
    ("neutrino", "username"),
    ("neutrino", "password"),
    ("neutrino", "password_file"),
    ("neutrino", "project_name"),
    ("neutrino", "full_resync_interval"),
];

/// The machine's host name (`/proc/sys/kernel/hostname`), Neutron's default `host`.
pub fn machine_hostname() -> String {
    neutrino_host::fs::read_to_string(std::path::Path::new("/proc/sys/kernel/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn positive(
    ini: &Ini,
    section: &'static str,
    key: &'static str,
    def: i64,
) -> Result<u64, AgentConfigError> {
    let v = ini.int(section, key, def)?;
    u64::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| invalid(section, key, "must be a positive number of seconds"))
}

fn metadata_config(
    ini: &Ini,
    roles: &[String],
    state_path: &std::path::Path,
) -> Result<Option<MetadataConfig>, AgentConfigError> {
    let has = |r: &str| roles.iter().any(|x| x == r);
    let routers = has("l3") && ini.boolean("DEFAULT", "enable_metadata_proxy", true)?;
    let isolated = has("dhcp") && ini.boolean("DEFAULT", "enable_isolated_metadata", false)?;
    let force = has("dhcp") && ini.boolean("DEFAULT", "force_metadata", false)?;
    if !(has("metadata") || routers || isolated || force) {
        return Ok(None);
    }
    let nova = match ini.opt_string("DEFAULT", "nova_metadata_host") {
        Some(host) => {
            let port = ini.int("DEFAULT", "nova_metadata_port", 8775)?;
            let port = u16::try_from(port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| invalid("DEFAULT", "nova_metadata_port", "not a TCP port"))?;
            let protocol = ini.string("DEFAULT", "nova_metadata_protocol", "http");
            if protocol != "http" {
                return Err(invalid(
                    "DEFAULT",
                    "nova_metadata_protocol",
                    format!("{protocol:?}: only http is supported"),
                ));
            }
            Some(NovaMetadata {
                host,
                port,
                protocol,
            })
        }
        None => None,
    };
    let socket = ini
        .opt_string("DEFAULT", "metadata_proxy_socket")
        .map(PathBuf::from)
        .unwrap_or_else(|| state_path.join("metadata_proxy"));
    Ok(Some(MetadataConfig {
        shared_secret: ini.string("DEFAULT", "metadata_proxy_shared_secret", ""),
        nova,
        socket,
        routers,
        isolated,
        force,
    }))
}

impl AgentConfig {
    /// Builds the configuration. `host`: `--host` (overrides `[DEFAULT] host`).
    pub fn from_ini(ini: &Ini, host: Option<&str>) -> Result<Self, AgentConfigError> {
        let host = host
            .map(str::to_string)
            .or_else(|| ini.opt_string("DEFAULT", "host"))
            .unwrap_or_else(machine_hostname);
        let mut interface_mappings = BTreeMap::new();
        for m in ini.list("linux_bridge", "physical_interface_mappings", &[]) {
            let (phys, iface) = m.split_once(':').ok_or_else(|| {
                invalid(
                    "linux_bridge",
                    "physical_interface_mappings",
                    format!("{m:?} is not PHYSNET:INTERFACE"),
                )
            })?;
            let (phys, iface) = (phys.trim(), iface.trim());
            if phys.is_empty() || neutrino_host::net::check_ifname(iface).is_err() {
                return Err(invalid(
                    "linux_bridge",
                    "physical_interface_mappings",
                    format!("{m:?} is not PHYSNET:INTERFACE"),
                ));
            }
            interface_mappings.insert(phys.to_string(), iface.to_string());
        }
        let vxlan = if ini.boolean("vxlan", "enable_vxlan", true)? {
            let raw = ini.opt_string("vxlan", "local_ip").ok_or_else(|| {
                invalid("vxlan", "local_ip", "required when enable_vxlan is true")
            })?;
            let local_ip: IpAddr = raw.parse().map_err(|_| {
                invalid("vxlan", "local_ip", format!("{raw:?} is not an IP address"))
            })?;
            let port = ini.int("vxlan", "udp_dstport", 8472)?;
            let udp_dstport = u16::try_from(port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| invalid("vxlan", "udp_dstport", "not a UDP port"))?;
            let l2_population = ini.boolean("vxlan", "l2_population", false)?;
            let group = if l2_population {
                None
            } else {
                Some(ini.string("vxlan", "vxlan_group", "224.0.0.1"))
            };
            Some(VxlanConfig {
                local_ip,
                l2_population,
                // Neutron's default: off. With it on, the VXLAN device answers ARP and
                // neighbour solicitations from our entries and drops the ones it has no
                // entry for.
                arp_responder: ini.boolean("vxlan", "arp_responder", false)?,
                group,
                udp_dstport,
            })
        } else {
            None
        };
        let roles = ini.list("neutrino", "agent_roles", &["l2", "dhcp"]);
        for r in &roles {
            if !["l2", "dhcp", "l3", "metadata"].contains(&r.as_str()) {
                return Err(invalid(
                    "neutrino",
                    "agent_roles",
                    format!("unknown role {r:?} (known: l2, dhcp, l3, metadata)"),
                ));
            }
        }
        let dhcp = if roles.iter().any(|r| r == "dhcp") {
            let lease_duration = ini.int("DEFAULT", "dhcp_lease_duration", 86400)?;
            if lease_duration == 0 || lease_duration < -1 {
                return Err(invalid(
                    "DEFAULT",
                    "dhcp_lease_duration",
                    "seconds > 0, or -1",
                ));
            }
            Some(DhcpConfig {
                domain: ini
                    .opt_string("DEFAULT", "dhcp_domain")
                    .or_else(|| ini.opt_string("DEFAULT", "dns_domain"))
                    .unwrap_or_else(|| "openstacklocal".into())
                    .trim_end_matches('.')
                    .to_string(),
                enable_isolated_metadata: ini.boolean(
                    "DEFAULT",
                    "enable_isolated_metadata",
                    false,
                )?,
                dns_servers: ini.list("DEFAULT", "dnsmasq_dns_servers", &[]),
                config_file: ini.opt_string("DEFAULT", "dnsmasq_config_file"),
                lease_duration,
                lease_max: positive(ini, "DEFAULT", "dnsmasq_lease_max", 1 << 24)?,
            })
        } else {
            None
        };
        let l3 = if roles.iter().any(|r| r == "l3") {
            let agent_mode = ini.string("DEFAULT", "agent_mode", "legacy");
            if agent_mode != "legacy" {
                return Err(invalid(
                    "DEFAULT",
                    "agent_mode",
                    format!("{agent_mode:?}: only legacy is implemented"),
                ));
            }
            Some(L3Config {
                agent_mode,
                handle_internal_only_routers: ini.boolean(
                    "DEFAULT",
                    "handle_internal_only_routers",
                    true,
                )?,
            })
        } else {
            None
        };
        let state_path = PathBuf::from(ini.string("DEFAULT", "state_path", "/var/lib/neutrino"));
        let metadata = metadata_config(ini, &roles, &state_path)?;
        let password = match ini.opt_string("neutrino", "password") {
            Some(p) => p,
            None => match ini.opt_string("neutrino", "password_file") {
                Some(f) => neutrino_host::fs::read_to_string(std::path::Path::new(&f))
                    .map(|s| s.trim().to_string())
                    .map_err(|e| invalid("neutrino", "password_file", format!("{f}: {e}")))?,
                None => {
                    return Err(invalid(
                        "neutrino",
                        "password",
                        "the service user's password (or password_file) is required",
                    ));
                }
            },
        };
        let identity_url = ini
            .opt_string("neutrino", "identity_url")
            .ok_or_else(|| invalid("neutrino", "identity_url", "required (Keystone v3 URL)"))?;
        Ok(AgentConfig {
            host,
            state_path,
            report_interval: positive(ini, "agent", "report_interval", 30)?,
            polling_interval: positive(ini, "agent", "polling_interval", 2)?,
            full_resync_interval: positive(ini, "neutrino", "full_resync_interval", 300)?,
            availability_zone: ini.string("agent", "availability_zone", "nova"),
            interface_mappings,
            vxlan,
            enable_security_group: ini.boolean("securitygroup", "enable_security_group", true)?,
            firewall_driver: ini.string("securitygroup", "firewall_driver", "nftables"),
            dhcp,
            l3,
            metadata,
            server: ServerConfig {
                identity_url,
                server_url: ini.opt_string("neutrino", "server_url"),
                username: ini.string("neutrino", "username", "neutrino-agent"),
                password,
                project_name: ini.string("neutrino", "project_name", "service"),
                user_domain_name: "Default".into(),
                project_domain_name: "Default".into(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, AgentConfigError> {
        AgentConfig::from_ini(&Ini::parse(text, "test").unwrap(), Some("h1"))
    }

    const BASE: &str = "[neutrino]\nidentity_url = http://198.18.0.1:5000/v3\npassword = pw\n";

    #[test]
    fn neutron_option_names() {
        let c = parse(&format!(
            "{BASE}[DEFAULT]\nenable_isolated_metadata = true\ndnsmasq_dns_servers = 192.0.2.53\n\
             dhcp_lease_duration = 600\n[linux_bridge]\nphysical_interface_mappings = physnet1:eth1\n\
             [vxlan]\nlocal_ip = 198.18.0.11\nl2_population = true\n[agent]\navailability_zone = az1\n"
        ))
        .unwrap();
        assert_eq!(c.host, "h1");
        assert_eq!(c.interface_mappings["physnet1"], "eth1");
        let v = c.vxlan.unwrap();
        assert_eq!(v.udp_dstport, 8472);
        assert!(v.l2_population && !v.arp_responder && v.group.is_none());
        let d = c.dhcp.unwrap();
        assert!(d.enable_isolated_metadata);
        assert_eq!(d.lease_duration, 600);
        assert_eq!(d.domain, "openstacklocal");
        assert_eq!(c.availability_zone, "az1");
        assert_eq!(c.server.username, "neutrino-agent");
        // enable_isolated_metadata implies the metadata proxy, to neutrino's own service.
        let m = c.metadata.unwrap();
        assert!(m.isolated && !m.routers && !m.force && m.nova.is_none());
        assert_eq!(m.socket, PathBuf::from("/var/lib/neutrino/metadata_proxy"));
    }

    #[test]
    fn metadata_proxy_options() {
        // Default roles (l2, dhcp) without isolated metadata: no proxy.
        assert!(
            parse(&format!("{BASE}[vxlan]\nenable_vxlan=false\n"))
                .unwrap()
                .metadata
                .is_none()
        );
        // The l3 role implies it (enable_metadata_proxy defaults to true).
        let c = parse(&format!(
            "{BASE}agent_roles = l2,l3\n[vxlan]\nenable_vxlan=false\n[DEFAULT]\n\
             metadata_proxy_shared_secret = s3cret\nnova_metadata_host = 192.0.2.7\n\
             state_path = /srv/n\n"
        ))
        .unwrap();
        let m = c.metadata.unwrap();
        assert!(m.routers && !m.isolated);
        assert_eq!(m.shared_secret, "s3cret");
        assert_eq!(m.nova.unwrap().url(), "http://192.0.2.7:8775");
        assert_eq!(m.socket, PathBuf::from("/srv/n/metadata_proxy"));
        let c = parse(&format!(
            "{BASE}agent_roles = l2,l3\n[vxlan]\nenable_vxlan=false\n[DEFAULT]\n\
             enable_metadata_proxy = false\n"
        ))
        .unwrap();
        assert!(c.metadata.is_none());
        // The metadata role alone: the proxy, no haproxy.
        let c = parse(&format!(
            "{BASE}agent_roles = l2,metadata\n[vxlan]\nenable_vxlan=false\n[DEFAULT]\n\
             force_metadata = true\nnova_metadata_host = ::1\nnova_metadata_port = 8000\n"
        ))
        .unwrap();
        let m = c.metadata.unwrap();
        assert!(!m.routers && !m.isolated && !m.force);
        assert_eq!(m.nova.unwrap().url(), "http://[::1]:8000");
        let e = parse(&format!(
            "{BASE}agent_roles = l2,metadata\n[vxlan]\nenable_vxlan=false\n[DEFAULT]\n\
             nova_metadata_host = h\nnova_metadata_protocol = gopher\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("nova_metadata_protocol"), "{e}");
    }

    #[test]
    fn example_config_parses() {
        let dir = std::env::temp_dir().join(format!("neutrino-agent-cfg-{}", std::process::id()));
        neutrino_host::fs::write_atomic(&dir.join("pw"), "secret\n").unwrap();
        let text = include_str!("../../../etc/neutrino-agent.ini").replace(
            "/etc/neutrino/agent-password",
            &dir.join("pw").display().to_string(),
        );
        let ini = Ini::parse(&text, "etc/neutrino-agent.ini").unwrap();
        for (s, k) in ini.keys() {
            assert!(
                KNOWN_OPTIONS.contains(&(s, k)),
                "[{s}] {k} is not a known option"
            );
        }
        let c = AgentConfig::from_ini(&ini, Some("compute1")).unwrap();
        assert_eq!(c.server.password, "secret");
        assert!(c.dhcp.is_some() && c.vxlan.is_some());
        neutrino_host::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn bad_values_name_the_option() {
        let e = parse(&format!("{BASE}[vxlan]\nlocal_ip = nope\n")).unwrap_err();
        assert!(e.to_string().contains("[vxlan] local_ip"), "{e}");
        let e = parse(BASE).unwrap_err();
        assert!(e.to_string().contains("local_ip"), "{e}");
        let e = parse(&format!(
            "{BASE}[vxlan]\nenable_vxlan=false\n[linux_bridge]\nphysical_interface_mappings = eth1\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("physical_interface_mappings"), "{e}");
        let c = parse(&format!(
            "{BASE}[vxlan]\nenable_vxlan=false\n[neutrino]\nagent_roles=l2\n"
        ))
        .unwrap();
        assert!(c.vxlan.is_none() && c.dhcp.is_none());
    }
}
