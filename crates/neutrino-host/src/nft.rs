//! nftables: applying a ruleset script atomically (`nft -f -`) and the bridge netfilter
//! switches security groups depend on.
//!
//! A script given to [`Nft::apply`] is one kernel transaction: it all applies or nothing
//! does. This module never builds scripts (the agent renders them) and never touches a table
//! it is not named in a script; [`Nft::tables`] and [`Nft::list_json`] only list.

use std::sync::Mutex;

use crate::exec::{self, HostError};

/// nftables operations.
pub trait Nft: Send + Sync {
    /// Applies `script` in one transaction (`nft -f -`).
    fn apply(&self, script: &str) -> Result<(), HostError>;
    /// The tables of this network namespace, as `family name`.
    fn tables(&self) -> Result<Vec<String>, HostError>;
    /// `nft -j list <what>` (e.g. `map inet t m`): the JSON listing of one object; an error
    /// when it does not exist.
    fn list_json(&self, what: &str) -> Result<String, HostError>;
    /// Makes bridged IPv4/IPv6 traffic pass the inet hooks (conntrack), i.e.
    /// `net.bridge.bridge-nf-call-ip{,6}tables = 1`. Returns whether it changed anything.
    fn ensure_bridge_nf(&self) -> Result<bool, HostError>;
}

/// The real implementation: the `nft` program and `/proc/sys`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealNft;

const BRIDGE_NF: [&str; 2] = [
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
];

impl Nft for RealNft {
    fn apply(&self, script: &str) -> Result<(), HostError> {
        exec::run_stdin(&["nft", "-f", "-"], script).map(|_| ())
    }

    fn tables(&self) -> Result<Vec<String>, HostError> {
        let out = exec::run(&["nft", "list", "tables"])?;
        Ok(parse_tables(&out))
    }

    fn list_json(&self, what: &str) -> Result<String, HostError> {
        let mut argv = vec!["nft", "-j", "list"];
        argv.extend(what.split_whitespace());
        exec::run(&argv)
    }

    fn ensure_bridge_nf(&self) -> Result<bool, HostError> {
        let mut changed = false;
        for path in BRIDGE_NF {
            let io = |op, source| HostError::Io {
                op,
                path: path.into(),
                source,
            };
            let cur = std::fs::read_to_string(path).map_err(|e| io("reading", e))?;
            if cur.trim() != "1" {
                std::fs::write(path, "1\n").map_err(|e| io("writing", e))?;
                changed = true;
            }
        }
        Ok(changed)
    }
}

/// `nft list tables` output (`table bridge x` lines) as `family name`.
pub fn parse_tables(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("table "))
        .map(str::to_string)
        .collect()
}

/// In-memory fake: records the scripts; a table exists once a script created it with
/// `table FAMILY NAME {` and until one deletes it (`delete table FAMILY NAME` as its last
/// mention).
#[derive(Debug, Default)]
pub struct FakeNft {
    /// Every script applied, in order.
    pub scripts: Mutex<Vec<String>>,
    /// Tables present.
    pub tables: Mutex<Vec<String>>,
    /// When set, the next `apply` fails with this message.
    pub fail_next: Mutex<Option<String>>,
    /// Whether bridge netfilter is on.
    pub bridge_nf: Mutex<bool>,
    /// What [`Nft::list_json`] answers, by its argument (absent: an empty listing for a
    /// `chain FAMILY TABLE NAME` of a table present, else an error, as for a missing
    /// object).
    pub listings: Mutex<std::collections::BTreeMap<String, String>>,
    /// How many times [`Nft::list_json`] was called.
    pub lists: Mutex<usize>,
}

impl FakeNft {
    /// Scripts applied so far.
    pub fn scripts(&self) -> Vec<String> {
        self.scripts.lock().expect("fake lock").clone()
    }
}

impl Nft for FakeNft {
    fn apply(&self, script: &str) -> Result<(), HostError> {
        if let Some(m) = self.fail_next.lock().expect("fake lock").take() {
            return Err(HostError::Invalid(m));
        }
        let mut tables = self.tables.lock().expect("fake lock");
        for line in script.lines() {
            let l = line.trim();
            if let Some(t) = l.strip_prefix("delete table ") {
                tables.retain(|x| x != t.trim());
            } else if let Some(t) = l.strip_prefix("table ") {
                let t = t.trim_end_matches('{').trim().to_string();
                if !tables.contains(&t) {
                    tables.push(t);
                }
            }
        }
        self.scripts
            .lock()
            .expect("fake lock")
            .push(script.to_string());
        Ok(())
    }

    fn tables(&self) -> Result<Vec<String>, HostError> {
        Ok(self.tables.lock().expect("fake lock").clone())
    }

    fn list_json(&self, what: &str) -> Result<String, HostError> {
        *self.lists.lock().expect("fake lock") += 1;
        if let Some(l) = self.listings.lock().expect("fake lock").get(what) {
            return Ok(l.clone());
        }
        let w: Vec<&str> = what.split_whitespace().collect();
        let tables = self.tables.lock().expect("fake lock");
        match w.as_slice() {
            ["chain", fam, table, _] if tables.contains(&format!("{fam} {table}")) => {
                Ok(r#"{"nftables": []}"#.to_string())
            }
            _ => Err(HostError::Invalid(format!("no such object: {what}"))),
        }
    }

    fn ensure_bridge_nf(&self) -> Result<bool, HostError> {
        let mut b = self.bridge_nf.lock().expect("fake lock");
        let changed = !*b;
        *b = true;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_table_list() {
        let out = "table inet filter\ntable bridge neutrino_sg\n";
        assert_eq!(parse_tables(out), ["inet filter", "bridge neutrino_sg"]);
    }

    #[test]
    fn fake_tracks_tables() {
        let f = FakeNft::default();
        f.apply("table bridge t {\n}\n").unwrap();
        assert_eq!(f.tables().unwrap(), ["bridge t"]);
        f.apply("delete table bridge t\n").unwrap();
        assert!(f.tables().unwrap().is_empty());
        *f.fail_next.lock().unwrap() = Some("boom".into());
        assert!(f.apply("x").is_err());
        assert_eq!(f.scripts().len(), 2);
    }

    #[test]
    fn real_apply_reports_nft_errors() {
        // A syntax error never reaches the kernel: safe to run anywhere nft exists.
        assert!(
            std::process::Command::new("nft")
                .arg("--version")
                .output()
                .is_ok(),
            "nft not found: run scripts/setup"
        );
        let e = RealNft.apply("this is not nft\n").unwrap_err();
        assert!(e.to_string().contains("nft -f -"), "{e}");
    }
}
