//! Configuration: oslo.config-style INI files with Neutron's section and option names.
//!
//! Owns parsing of one or more `--config-file`s (later files override earlier ones, as
//! oslo.config does) into a typed [`Config`]. Unknown options are logged once and ignored,
//! because operators bring whole `neutron.conf` files; a malformed value of a known option is
//! fatal and names the file, section and key. This module must never read the environment or
//! touch the network: it only turns text into values.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A parsed INI document: section → key → (value, file it came from).
#[derive(Debug, Default, Clone)]
pub struct Ini {
    sections: BTreeMap<String, BTreeMap<String, (String, String)>>,
}

/// A configuration problem, with the place it was found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `key = value`, a section header, or a comment.
    #[error("{file}:{line}: cannot parse line: {text:?}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The text of the line.
        text: String,
    },
    /// A known option has a value of the wrong form.
    #[error("invalid value {value:?} for [{section}] {key} (from {file}): {reason}")]
    Value {
        /// Where the value came from.
        file: String,
        /// Section name.
        section: String,
        /// Option name.
        key: String,
        /// The raw value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Ini {
    /// Parses INI text. `origin` names the source in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut ini = Ini::default();
        ini.merge_text(text, origin)?;
        Ok(ini)
    }

    /// Reads and merges files in order; later values override earlier ones.
    pub fn load(paths: &[PathBuf]) -> Result<Self, ConfigError> {
        let mut ini = Ini::default();
        for p in paths {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?;
            ini.merge_text(&text, &p.display().to_string())?;
        }
        Ok(ini)
    }

    fn merge_text(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let mut section = "DEFAULT".to_string();
        let mut last_key: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end();
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            // oslo.config allows continuation lines: indented text extends the last value.
            if line.starts_with([' ', '\t']) && last_key.is_some() && !trimmed.starts_with('[') {
                if let Some((v, _)) = last_key
                    .as_ref()
                    .and_then(|key| self.sections.get_mut(&section)?.get_mut(key))
                {
                    v.push('\n');
                    v.push_str(trimmed);
                }
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix('[') {
                let name = rest.strip_suffix(']').ok_or_else(|| ConfigError::Syntax {
                    file: origin.to_string(),
                    line: i + 1,
                    text: raw.to_string(),
                })?;
                section = name.trim().to_string();
                last_key = None;
                continue;
            }
            let Some((k, v)) = trimmed.split_once(['=', ':']) else {
                return Err(ConfigError::Syntax {
                    file: origin.to_string(),
                    line: i + 1,
                    text: raw.to_string(),
                });
            };
            let key = k.trim().to_string();
            let value = v.trim().to_string();
            self.sections
                .entry(section.clone())
                .or_default()
                .insert(key.clone(), (value, origin.to_string()));
            last_key = Some(key);
        }
        Ok(())
    }

    /// The raw value of an option, if set.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .get(section)
            .and_then(|s| s.get(key))
            .map(|(v, _)| v.as_str())
    }

    /// Sets a value (used for command-line overrides).
    pub fn set(&mut self, section: &str, key: &str, value: &str) {
        self.sections
            .entry(section.to_string())
            .or_default()
            .insert(
                key.to_string(),
                (value.to_string(), "command line".to_string()),
            );
    }

    fn origin(&self, section: &str, key: &str) -> String {
        self.sections
            .get(section)
            .and_then(|s| s.get(key))
            .map(|(_, o)| o.clone())
            .unwrap_or_default()
    }

    fn bad(&self, section: &str, key: &str, reason: impl fmt::Display) -> ConfigError {
        ConfigError::Value {
            file: self.origin(section, key),
            section: section.to_string(),
            key: key.to_string(),
            value: self.get(section, key).unwrap_or_default().to_string(),
            reason: reason.to_string(),
        }
    }

    /// A string option with a default.
    pub fn string(&self, section: &str, key: &str, default: &str) -> String {
        self.get(section, key).unwrap_or(default).to_string()
    }

    /// An optional string option (empty counts as unset, as in oslo.config).
    pub fn opt_string(&self, section: &str, key: &str) -> Option<String> {
        self.get(section, key)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// A boolean option (`true/false/yes/no/1/0/on/off`, any case).
    pub fn boolean(&self, section: &str, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(section, key) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Ok(true),
                "false" | "no" | "0" | "off" => Ok(false),
                _ => Err(self.bad(section, key, "expected a boolean")),
            },
        }
    }

    /// An integer option.
    pub fn int(&self, section: &str, key: &str, default: i64) -> Result<i64, ConfigError> {
        match self.get(section, key) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| self.bad(section, key, format!("expected an integer: {e}"))),
        }
    }

    /// A comma-separated list option (whitespace around items ignored, empty items dropped).
    pub fn list(&self, section: &str, key: &str, default: &[&str]) -> Vec<String> {
        match self.get(section, key) {
            None => default.iter().map(|s| s.to_string()).collect(),
            Some(v) => v
                .split([',', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// Every (section, key) present, for reporting unknown options.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.sections
            .iter()
            .flat_map(|(s, kv)| kv.keys().map(move |k| (s.as_str(), k.as_str())))
    }
}

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
            .map_err(|_| ini.bad("DEFAULT", "bind_port", "not a TCP port"))?;
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
            usize::try_from(v).map_err(|_| ini.bad("DEFAULT", key, "must not be negative"))
        };
        let base_mac = ini.string("DEFAULT", "base_mac", "fa:16:3e:00:00:00");
        if parse_mac(&base_mac).is_none() {
            return Err(ini.bad("DEFAULT", "base_mac", "expected a MAC address"));
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
        ini.merge_text(
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
    fn syntax_error_has_line() {
        let err = Ini::parse("[DEFAULT]\njunk\n", "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("f:2"), "{err}");
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

    #[test]
    fn lists_and_continuations() {
        let ini = Ini::parse("[ml2]\ntype_drivers = flat, vlan,\n  vxlan\n", "f").unwrap();
        assert_eq!(
            ini.list("ml2", "type_drivers", &[]),
            ["flat", "vlan", "vxlan"]
        );
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
