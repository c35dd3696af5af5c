//! neutrino-ini: oslo.config-style INI files with Neutron's section and option names.
//!
//! Owns the text format both roles read their configuration from: sections, `key = value`
//! (or `key: value`), `#`/`;` comments, indented continuation lines, and several files merged
//! in order (later `--config-file`s override earlier ones, as oslo.config does), each value
//! remembering the file it came from so a malformed value is reported with its file, section
//! and key. Typed accessors (`boolean`, `int`, `list`, ...) apply oslo.config's spellings.
//! Turning options into a role's typed configuration is the role's business
//! (`neutrino_core::config::Config` for the server, `neutrino_agent::config` for the agent).
//!
//! This crate must never depend on the server's or the agent's machinery (it is what lets the
//! agent read its files without linking sqlx), never read the environment, and reads no file
//! but the ones [`Ini::load`] is given.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

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
        ini.merge(text, origin)?;
        Ok(ini)
    }

    /// Reads and merges files in order; later values override earlier ones.
    // Reading the operator's configuration is not an effect on the host, and both roles need
    // it: the server, which by design does not link neutrino-host, and the agent, before any
    // host handle exists. So this one read stays here rather than in neutrino_host::fs.
    #[allow(clippy::disallowed_methods)]
    pub fn load(paths: &[PathBuf]) -> Result<Self, ConfigError> {
        let mut ini = Ini::default();
        for p in paths {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?;
            ini.merge(&text, &p.display().to_string())?;
        }
        Ok(ini)
    }

    /// Merges INI text over what is already there (a later `--config-file`). `origin`
    /// names the source in error messages.
    pub fn merge(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
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

    /// The error for a malformed value of a known option: names the file it came from, the
    /// section, the key and the value.
    pub fn invalid(&self, section: &str, key: &str, reason: impl fmt::Display) -> ConfigError {
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
                _ => Err(self.invalid(section, key, "expected a boolean")),
            },
        }
    }

    /// An integer option.
    pub fn int(&self, section: &str, key: &str, default: i64) -> Result<i64, ConfigError> {
        match self.get(section, key) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| self.invalid(section, key, format!("expected an integer: {e}"))),
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn later_text_overrides_and_remembers_its_origin() {
        let mut ini = Ini::parse("[DEFAULT]\nbind_port = 1234\n# c\nfoo=bar\n", "a").unwrap();
        ini.merge(
            "[DEFAULT]\nbind_port: 4321\n[quotas]\nquota_port = 7\n",
            "b",
        )
        .unwrap();
        assert_eq!(ini.get("DEFAULT", "bind_port"), Some("4321"));
        assert_eq!(ini.get("DEFAULT", "foo"), Some("bar"));
        assert_eq!(ini.int("quotas", "quota_port", 1).unwrap(), 7);
        let err = ini.invalid("DEFAULT", "bind_port", "no").to_string();
        assert_eq!(
            err,
            "invalid value \"4321\" for [DEFAULT] bind_port (from b): no"
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
    fn bad_value_names_the_place() {
        let ini = Ini::parse("[DEFAULT]\nmax_dns_nameservers = many\n", "x.conf").unwrap();
        let err = ini
            .int("DEFAULT", "max_dns_nameservers", 5)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.conf") && err.contains("max_dns_nameservers"),
            "{err}"
        );
    }

    #[test]
    fn booleans_in_oslo_spellings() {
        let ini = Ini::parse("[a]\nx = Yes\ny = off\nz = maybe\n", "f").unwrap();
        assert!(ini.boolean("a", "x", false).unwrap());
        assert!(!ini.boolean("a", "y", true).unwrap());
        assert!(ini.boolean("a", "unset", true).unwrap());
        assert!(ini.boolean("a", "z", true).is_err());
    }

    #[test]
    fn lists_and_continuations() {
        let ini = Ini::parse("[ml2]\ntype_drivers = flat, vlan,\n  vxlan\n", "f").unwrap();
        assert_eq!(
            ini.list("ml2", "type_drivers", &[]),
            ["flat", "vlan", "vxlan"]
        );
    }

    #[test]
    fn empty_counts_as_unset_for_optional_strings() {
        let mut ini = Ini::parse("[s]\na =\n", "f").unwrap();
        assert_eq!(ini.opt_string("s", "a"), None);
        ini.set("s", "a", "v");
        assert_eq!(ini.opt_string("s", "a").as_deref(), Some("v"));
        assert_eq!(ini.keys().collect::<Vec<_>>(), [("s", "a")]);
    }

    #[test]
    fn load_merges_files_in_order_and_names_a_missing_one() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc");
        let ini = Ini::load(&[dir.join("neutrino.conf")]).unwrap();
        assert_eq!(ini.get("DEFAULT", "core_plugin"), Some("ml2"));
        let missing = dir.join("no-such.conf");
        let err = Ini::load(&[missing]).unwrap_err().to_string();
        assert!(err.contains("no-such.conf"), "{err}");
    }
}
