//! Finding the cloud like the `openstack` client does: `OS_CLOUD` and a `clouds.yaml`
//! (`OS_CLIENT_CONFIG_FILE`, `./clouds.yaml`, `~/.config/openstack/clouds.yaml`,
//! `/etc/openstack/clouds.yaml`), or the `OS_*` variables.
//!
//! Owns a reader for the block-mapping subset of YAML that `clouds.yaml` files use (nested
//! `key: value` maps, comments, quoted scalars); lists and flow style are not needed for
//! password credentials and are ignored. See `docs/decisions/0003-*` for why not a YAML
//! crate. This module must never send the credentials anywhere: it only reads them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::client::Credentials;

/// The cloud could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum CloudsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Required settings are missing.
    #[error("{0}")]
    Missing(String),
}

/// Flattens YAML block mappings to `a.b.c` → scalar.
pub fn flatten_yaml(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    for raw in text.lines() {
        let line = strip_comment(raw);
        let content = line.trim_start();
        if content.is_empty() || content.starts_with("---") || content.starts_with('-') {
            continue;
        }
        let indent = line.len() - content.len();
        let Some((key, value)) = content.split_once(':') else {
            continue;
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let key = unquote(key.trim());
        let path = match stack.last() {
            Some((_, p)) => format!("{p}.{key}"),
            None => key,
        };
        let value = value.trim();
        if value.is_empty() {
            stack.push((indent, path));
        } else {
            out.insert(path, unquote(value));
        }
    }
    out
}

fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

fn unquote(s: &str) -> String {
    let t = s.trim();
    for q in ['"', '\''] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            return t[1..t.len() - 1].to_string();
        }
    }
    t.to_string()
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn clouds_files() -> Vec<PathBuf> {
    if let Some(f) = env("OS_CLIENT_CONFIG_FILE") {
        return vec![PathBuf::from(f)];
    }
    let mut v = vec![PathBuf::from("clouds.yaml")];
    if let Some(h) = env("HOME") {
        v.push(PathBuf::from(h).join(".config/openstack/clouds.yaml"));
    }
    v.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    v
}

/// The credentials of `OS_CLOUD` (from clouds.yaml) or of the `OS_*` variables.
pub fn credentials() -> Result<Credentials, CloudsError> {
    let mut get: BTreeMap<&str, Option<String>> = BTreeMap::new();
    if let Some(cloud) = env("OS_CLOUD") {
        let file = clouds_files()
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| {
                CloudsError::Missing(format!("OS_CLOUD={cloud} but no clouds.yaml found"))
            })?;
        let text =
            neutrino_host::fs::read_to_string(&file).map_err(|source| CloudsError::Read {
                path: file.clone(),
                source,
            })?;
        let y = flatten_yaml(&text);
        let base = format!("clouds.{cloud}");
        if !y.keys().any(|k| k.starts_with(&format!("{base}."))) {
            return Err(CloudsError::Missing(format!(
                "cloud {cloud:?} is not in {}",
                file.display()
            )));
        }
        for (k, path) in [
            ("auth_url", "auth.auth_url"),
            ("username", "auth.username"),
            ("password", "auth.password"),
            ("project_name", "auth.project_name"),
            ("user_domain_name", "auth.user_domain_name"),
            ("project_domain_name", "auth.project_domain_name"),
            ("region", "region_name"),
            ("interface", "interface"),
        ] {
            get.insert(k, y.get(&format!("{base}.{path}")).cloned());
        }
    }
    let mut pick = |k: &'static str, var: &str| -> Option<String> {
        get.remove(k).flatten().or_else(|| env(var))
    };
    let auth_url = pick("auth_url", "OS_AUTH_URL");
    let username = pick("username", "OS_USERNAME");
    let password = pick("password", "OS_PASSWORD");
    let project_name = pick("project_name", "OS_PROJECT_NAME");
    let (Some(auth_url), Some(username), Some(password), Some(project_name)) =
        (auth_url, username, password, project_name)
    else {
        return Err(CloudsError::Missing(
            "no cloud: set OS_CLOUD (with a clouds.yaml) or OS_AUTH_URL, OS_USERNAME, \
             OS_PASSWORD and OS_PROJECT_NAME"
                .into(),
        ));
    };
    Ok(Credentials {
        auth_url,
        username,
        password,
        project_name,
        user_domain_name: pick("user_domain_name", "OS_USER_DOMAIN_NAME")
            .unwrap_or_else(|| "Default".into()),
        project_domain_name: pick("project_domain_name", "OS_PROJECT_DOMAIN_NAME")
            .unwrap_or_else(|| "Default".into()),
        region: pick("region", "OS_REGION_NAME"),
        interface: pick("interface", "OS_INTERFACE").unwrap_or_else(|| "public".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_clouds_yaml_subset() {
        let y = flatten_yaml(
            "# Written by `neutrino all-in-one`.\nclouds:\n  neutrino:\n    auth:\n      \
             auth_url: http://127.0.0.1:5000/v3\n      username: admin\n      password: \"p#w: x\"\n      \
             project_name: admin # trailing\n    region_name: RegionOne\n  other:\n    auth:\n      username: bob\n",
        );
        assert_eq!(
            y["clouds.neutrino.auth.auth_url"],
            "http://127.0.0.1:5000/v3"
        );
        assert_eq!(y["clouds.neutrino.auth.password"], "p#w: x");
        assert_eq!(y["clouds.neutrino.auth.project_name"], "admin");
        assert_eq!(y["clouds.neutrino.region_name"], "RegionOne");
        assert_eq!(y["clouds.other.auth.username"], "bob");
    }
}
