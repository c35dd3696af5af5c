//! Configuration: oslo.config-style INI files with Neutron's section and option names.
//!
//! Owns turning one or more `--config-file`s (later files override earlier ones, as
//! oslo.config does; the text format is `neutrino_ini`'s, re-exported here) into the server's
//! typed [`Config`]. Unknown options are logged once and ignored,
//! because operators bring whole `neutron.conf` files; a malformed value of a known option is
//! fatal and names the file, section and key. This module must never read the environment or
//! touch the network: it only turns text into values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use neutrino_ini::{ConfigError, Ini};

/// Options of the API server (`neutron.conf` names).
#[derive(Debug, Clone)]
pub struct Config {
    /// The merged INI the typed values came from; other roles read their own sections from it.
    pub ini: Ini,
    /// `[DEFAULT] bind_host`.
    pub bind_host: String,
    /// `[DEFAULT] bind_port`.
    pub bind_port: u16,
    /// `[DEFAULT] base_mac`.
    pub base_mac: String,
    /// `[DEFAULT] allow_overlapping_ips`.
    pub allow_overlapping_ips: bool,
    /// `[DEFAULT] max_dns_nameservers`.
    pub max_dns_nameservers: usize,
    /// `[DEFAULT] max_subnet_host_routes`.
    pub max_subnet_host_routes: usize,
    /// `[DEFAULT] max_allowed_address_pair`.
    pub max_allowed_address_pair: usize,
    /// `[DEFAULT] api_workers` (tokio worker threads; 0 = one per core).
    pub api_workers: usize,
    /// `[DEFAULT] global_physnet_mtu`.
    pub global_physnet_mtu: i64,
    /// `[DEFAULT] pagination_max_limit` (-1 = no limit).
    pub pagination_max_limit: i64,
    /// `[DEFAULT] dns_domain`.
    pub dns_domain: String,
    /// `[DEFAULT] dhcp_lease_duration`.
    pub dhcp_lease_duration: i64,
    /// `[database] connection`.
    pub database_connection: Option<String>,
    /// `[quotas]` defaults, resource name → limit (-1 = unlimited).
    pub quotas: BTreeMap<String, i64>,
    /// `[oslo_policy] policy_file`.
    pub policy_file: Option<String>,
    /// `[keystone_authtoken]`: validate tokens against an external Keystone when set.
    pub keystone_authtoken: Option<KeystoneAuthtoken>,
    /// The secret metadata proxies sign instance ids with (see [`metadata_secret`]); the
    /// metadata service refuses every request while it is unset.
    pub metadata_proxy_shared_secret: Option<String>,
}

/// Where the metadata proxy shared secret may be set, in order of precedence: neutrino's own
/// `[metadata]` section, Nova's spelling (`[neutron]` of nova.conf), and `[DEFAULT]` (the
/// metadata_agent.ini spelling, so one file can serve a server and its agent).
pub const METADATA_SECRET_OPTIONS: &[(&str, &str)] = &[
    ("metadata", "metadata_proxy_shared_secret"),
    ("neutron", "metadata_proxy_shared_secret"),
    ("DEFAULT", "metadata_proxy_shared_secret"),
];

/// The metadata proxy shared secret configured in `ini`, if any (empty counts as unset).
pub fn metadata_secret(ini: &Ini) -> Option<String> {
    METADATA_SECRET_OPTIONS
        .iter()
        .find_map(|(s, k)| ini.opt_string(s, k))
}

/// `[keystone_authtoken]` options (the keystonemiddleware names).
#[derive(Debug, Clone)]
pub struct KeystoneAuthtoken {
    /// `auth_url` (identity endpoint used to validate tokens).
    pub auth_url: String,
    /// `username` of the service user.
    pub username: String,
    /// `password` of the service user.
    pub password: String,
    /// `project_name` of the service user.
    pub project_name: String,
    /// `user_domain_name`.
    pub user_domain_name: String,
    /// `project_domain_name`.
    pub project_domain_name: String,
    /// `www_authenticate_uri` advertised in 401 answers.
    pub www_authenticate_uri: Option<String>,
}

/// Quota resources and Neutron's default limits (`[quotas] quota_<resource>`).
pub const DEFAULT_QUOTAS: &[(&str, i64)] = &[
    ("network", 100),
    ("subnet", 100),
    ("port", 500),
    ("router", 10),
    ("floatingip", 50),
    ("security_group", 10),
    ("security_group_rule", 100),
    ("subnetpool", -1),
    ("rbac_policy", 10),
];

/// Options this server understands; anything else is reported once as ignored.
const KNOWN: &[(&str, &str)] = &[
    ("DEFAULT", "bind_host"),
    ("DEFAULT", "bind_port"),
    ("DEFAULT", "base_mac"),
    ("DEFAULT", "allow_overlapping_ips"),
    ("DEFAULT", "max_dns_nameservers"),
    ("DEFAULT", "max_subnet_host_routes"),
    ("DEFAULT", "max_allowed_address_pair"),
    ("DEFAULT", "api_workers"),
    ("DEFAULT", "global_physnet_mtu"),
    ("DEFAULT", "pagination_max_limit"),
    ("DEFAULT", "dns_domain"),
    ("DEFAULT", "dhcp_lease_duration"),
    ("DEFAULT", "debug"),
    ("DEFAULT", "auth_strategy"),
    ("DEFAULT", "core_plugin"),
    ("DEFAULT", "service_plugins"),
    ("database", "connection"),
    ("oslo_policy", "policy_file"),
    ("metadata", "metadata_proxy_shared_secret"),
    ("neutron", "metadata_proxy_shared_secret"),
    ("DEFAULT", "metadata_proxy_shared_secret"),
    ("keystone_authtoken", "auth_url"),
    ("keystone_authtoken", "username"),
    ("keystone_authtoken", "password"),
    ("keystone_authtoken", "project_name"),
    ("keystone_authtoken", "user_domain_name"),
    ("keystone_authtoken", "project_domain_name"),
    ("keystone_authtoken", "www_authenticate_uri"),
    ("keystone_authtoken", "auth_type"),
    ("neutrino", "identity_port"),
    ("neutrino", "identity_bind_host"),
    ("neutrino", "token_expiration"),
    ("neutrino", "public_endpoint"),
    ("neutrino", "region"),
];

impl Config {
    /// Builds the typed configuration from merged INI text.
    pub fn from_ini(ini: Ini) -> Result<Self, ConfigError> {
        let mut quotas = BTreeMap::new();
        for (res, def) in DEFAULT_QUOTAS {
            quotas.insert(
                (*res).to_string(),
                ini.int("quotas", &format!("quota_{res}"), *def)?,
            );
        }
        let bind_port = ini.int("DEFAULT", "bind_port", 9696)?;
        let bind_port = u16::try_from(bind_port)
            .map_err(|_| ini.invalid("DEFAULT", "bind_port", "not a TCP port"))?;
        let keystone_authtoken = ini
            .opt_string("keystone_authtoken", "auth_url")
            .map(|auth_url| KeystoneAuthtoken {
                auth_url,
                username: ini.string("keystone_authtoken", "username", "neutron"),
                password: ini.string("keystone_authtoken", "password", ""),
                project_name: ini.string("keystone_authtoken", "project_name", "service"),
                user_domain_name: ini.string("keystone_authtoken", "user_domain_name", "Default"),
                project_domain_name: ini.string(
                    "keystone_authtoken",
                    "project_domain_name",
                    "Default",
                ),
                www_authenticate_uri: ini.opt_string("keystone_authtoken", "www_authenticate_uri"),
            });
        let usize_opt = |key: &str, def: i64| -> Result<usize, ConfigError> {
            let v = ini.int("DEFAULT", key, def)?;
            usize::try_from(v).map_err(|_| ini.invalid("DEFAULT", key, "must not be negative"))
        };
        let base_mac = ini.string("DEFAULT", "base_mac", "fa:16:3e:00:00:00");
        if parse_mac(&base_mac).is_none() {
            return Err(ini.invalid("DEFAULT", "base_mac", "expected a MAC address"));
        }
        Ok(Config {
            bind_host: ini.string("DEFAULT", "bind_host", "0.0.0.0"),
            bind_port,
            base_mac,
            allow_overlapping_ips: ini.boolean("DEFAULT", "allow_overlapping_ips", true)?,
            max_dns_nameservers: usize_opt("max_dns_nameservers", 5)?,
            max_subnet_host_routes: usize_opt("max_subnet_host_routes", 20)?,
            max_allowed_address_pair: usize_opt("max_allowed_address_pair", 10)?,
            api_workers: usize_opt("api_workers", 0)?,
            global_physnet_mtu: ini.int("DEFAULT", "global_physnet_mtu", 1500)?,
            pagination_max_limit: ini.int("DEFAULT", "pagination_max_limit", -1)?,
            dns_domain: ini.string("DEFAULT", "dns_domain", "openstacklocal"),
            dhcp_lease_duration: ini.int("DEFAULT", "dhcp_lease_duration", 86400)?,
            database_connection: ini.opt_string("database", "connection"),
            quotas,
            policy_file: ini.opt_string("oslo_policy", "policy_file"),
            keystone_authtoken,
            metadata_proxy_shared_secret: metadata_secret(&ini),
            ini,
        })
    }

    /// Reports options nobody reads, once, at warn level. `extra` lists (section, key) pairs
    /// other roles in this process understand.
    pub fn log_unknown(&self, extra: &[(&str, &str)]) {
        for (s, k) in self.ini.keys() {
            let known = KNOWN
                .iter()
                .chain(extra.iter())
                .any(|(ks, kk)| *ks == s && *kk == k)
                || (s == "quotas" && k.starts_with("quota_"));
            if !known {
                tracing::warn!(
                    section = s,
                    option = k,
                    "ignoring unknown configuration option"
                );
            }
        }
    }

    /// Loads `paths` in order.
    pub fn load(paths: &[PathBuf]) -> Result<Self, ConfigError> {
        Self::from_ini(Ini::load(paths)?)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::from_ini(Ini::default()).expect("defaults are valid")
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (also `-` separated) into bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    Some(out)
}

/// Helper for tests and the all-in-one: the path of a file inside a directory.
pub fn in_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_override_and_unknown_is_kept() {
        let mut ini = Ini::parse("[DEFAULT]\nbind_port = 1234\n# c\nfoo=bar\n", "a").unwrap();
        ini.merge(
            "[DEFAULT]\nbind_port: 4321\n[quotas]\nquota_port = 7\n",
            "b",
        )
        .unwrap();
        let c = Config::from_ini(ini).unwrap();
        assert_eq!(c.bind_port, 4321);
        assert_eq!(c.quotas["port"], 7);
        assert_eq!(c.quotas["network"], 100);
        assert_eq!(c.ini.get("DEFAULT", "foo"), Some("bar"));
    }

    #[test]
    fn bad_value_names_the_place() {
        let ini = Ini::parse("[DEFAULT]\nmax_dns_nameservers = many\n", "x.conf").unwrap();
        let err = Config::from_ini(ini).unwrap_err().to_string();
        assert!(
            err.contains("x.conf") && err.contains("max_dns_nameservers"),
            "{err}"
        );
    }

    #[test]
    fn metadata_secret_precedence() {
        let c = Config::from_ini(
            Ini::parse("[DEFAULT]\nmetadata_proxy_shared_secret = d\n", "f").unwrap(),
        )
        .unwrap();
        assert_eq!(c.metadata_proxy_shared_secret.as_deref(), Some("d"));
        let c = Config::from_ini(
            Ini::parse(
                "[DEFAULT]\nmetadata_proxy_shared_secret = d\n[metadata]\nmetadata_proxy_shared_secret = m\n[neutron]\nmetadata_proxy_shared_secret = n\n",
                "f",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(c.metadata_proxy_shared_secret.as_deref(), Some("m"));
        let c = Config::from_ini(
            Ini::parse("[metadata]\nmetadata_proxy_shared_secret =\n", "f").unwrap(),
        )
        .unwrap();
        assert_eq!(c.metadata_proxy_shared_secret, None);
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/neutrino.conf");
        let c = Config::load(&[path]).unwrap();
        assert_eq!(c.bind_port, 9696);
        assert_eq!(
            c.database_connection.as_deref(),
            Some("sqlite:///var/lib/neutrino/neutrino.sqlite")
        );
        assert_eq!(c.ini.get("DEFAULT", "core_plugin"), Some("ml2"));
    }
}
