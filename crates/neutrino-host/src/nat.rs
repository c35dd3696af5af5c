//! Router namespaces: nftables tables applied atomically, sysctls, routes and gratuitous
//! ARP inside a named namespace — the host primitives of the L3 reconciler.
//!
//! [`RouterOs`] is the facility; [`RealRouterOs`] runs `ip netns exec NS nft -f -` (the
//! ruleset on stdin, one transaction), `ip netns exec NS sysctl`, `ip -n NS route` and
//! `arping -U` (busybox's when no `arping` is installed). [`FakeRouterOs`] records in memory.
//! This module never decides what a ruleset contains: callers hand it complete texts.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde::Deserialize;

use crate::HostError;
use crate::exec::{run, run_json, show, spawn_detached};

/// A route of a namespace's main table as observed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// `default` or `addr/prefix` (host routes as `addr/32`).
    pub dst: String,
    /// Next hop, for routes via a gateway.
    pub via: Option<String>,
}

/// Operations inside router namespaces.
pub trait RouterOs: Send + Sync {
    /// Applies an nftables script (`nft -f -`) in `ns`, atomically.
    fn nft_apply(&self, ns: &str, script: &str) -> Result<(), HostError>;
    /// Whether table `family name` exists in `ns`.
    fn nft_has_table(&self, ns: &str, family: &str, name: &str) -> Result<bool, HostError>;
    /// Reads a sysctl in `ns`.
    fn sysctl_get(&self, ns: &str, key: &str) -> Result<String, HostError>;
    /// Writes a sysctl in `ns`.
    fn sysctl_set(&self, ns: &str, key: &str, value: &str) -> Result<(), HostError>;
    /// IPv4 routes of the main table with a next hop (`via`) in `ns`.
    fn gw_routes(&self, ns: &str) -> Result<Vec<Route>, HostError>;
    /// `ip route replace DST via VIA`.
    fn replace_route(&self, ns: &str, route: &Route) -> Result<(), HostError>;
    /// `ip route del DST via VIA`; missing is success.
    fn del_route(&self, ns: &str, route: &Route) -> Result<(), HostError>;
    /// Sends gratuitous ARP for `ip` from `dev` in `ns` (in the background).
    fn garp(&self, ns: &str, dev: &str, ip: &str) -> Result<(), HostError>;
}

/// [`RouterOs`] of the real host.
#[derive(Debug, Clone, Default)]
pub struct RealRouterOs;

#[derive(Deserialize)]
struct JRoute {
    dst: String,
    gateway: Option<String>,
}

fn in_ns<'a>(ns: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(rest);
    v
}

fn route_args<'a>(verb: &'a str, r: &'a Route) -> Vec<&'a str> {
    let mut v = vec!["route", verb, r.dst.as_str()];
    if let Some(g) = &r.via {
        v.extend(["via", g.as_str()]);
    }
    v
}

impl RouterOs for RealRouterOs {
    fn nft_apply(&self, ns: &str, script: &str) -> Result<(), HostError> {
        let argv = in_ns(ns, &["nft", "-f", "-"]);
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HostError::Spawn {
                cmd: show(&argv),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|source| HostError::Spawn {
                    cmd: show(&argv),
                    source,
                })?;
        }
        let out = child
            .wait_with_output()
            .map_err(|source| HostError::Spawn {
                cmd: show(&argv),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(HostError::Failed {
                cmd: show(&argv),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn nft_has_table(&self, ns: &str, family: &str, name: &str) -> Result<bool, HostError> {
        let out = run(&in_ns(ns, &["nft", "list", "tables", family]))?;
        Ok(out
            .lines()
            .any(|l| l.trim() == format!("table {family} {name}")))
    }

    fn sysctl_get(&self, ns: &str, key: &str) -> Result<String, HostError> {
        Ok(run(&in_ns(ns, &["sysctl", "-n", key]))?.trim().to_string())
    }

    fn sysctl_set(&self, ns: &str, key: &str, value: &str) -> Result<(), HostError> {
        let kv = format!("{key}={value}");
        run(&in_ns(ns, &["sysctl", "-qw", &kv])).map(|_| ())
    }

    fn gw_routes(&self, ns: &str) -> Result<Vec<Route>, HostError> {
        let v: Vec<JRoute> = run_json(&["ip", "-n", ns, "-4", "-j", "route", "show"])?;
        Ok(v.into_iter()
            .filter(|r| r.gateway.is_some())
            .map(|r| Route {
                dst: if r.dst == "default" || r.dst.contains('/') {
                    r.dst
                } else {
                    format!("{}/32", r.dst)
                },
                via: r.gateway,
            })
            .collect())
    }

    fn replace_route(&self, ns: &str, r: &Route) -> Result<(), HostError> {
        let mut argv = vec!["ip", "-n", ns];
        argv.extend(route_args("replace", r));
        run(&argv).map(|_| ())
    }

    fn del_route(&self, ns: &str, r: &Route) -> Result<(), HostError> {
        let mut argv = vec!["ip", "-n", ns];
        argv.extend(route_args("del", r));
        match run(&argv) {
            Err(e) if e.is_missing() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    fn garp(&self, ns: &str, dev: &str, ip: &str) -> Result<(), HostError> {
        let arping: &[&str] = if which("arping") {
            &["arping"]
        } else {
            &["busybox", "arping"]
        };
        let mut argv = vec!["ip", "netns", "exec", ns];
        argv.extend_from_slice(arping);
        argv.extend(["-U", "-c", "3", "-I", dev, ip]);
        spawn_detached(&argv).map(|_| ())
    }
}

fn which(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// In-memory [`RouterOs`] for reconciler tests: records scripts, sysctls, routes, ARPs.
#[derive(Debug, Default)]
pub struct FakeRouterOs {
    /// Everything, behind a lock.
    pub state: Mutex<FakeRouterState>,
}

/// [`FakeRouterOs`]'s contents.
#[derive(Debug, Default)]
pub struct FakeRouterState {
    /// Last script applied per namespace.
    pub nft: BTreeMap<String, String>,
    /// Sysctls per (namespace, key).
    pub sysctl: BTreeMap<(String, String), String>,
    /// Routes per namespace.
    pub routes: BTreeMap<String, Vec<Route>>,
    /// Gratuitous ARPs sent: (namespace, device, ip).
    pub garps: Vec<(String, String, String)>,
    /// Mutating operations performed.
    pub ops: usize,
}

impl FakeRouterOs {
    fn with<T>(&self, f: impl FnOnce(&mut FakeRouterState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl RouterOs for FakeRouterOs {
    fn nft_apply(&self, ns: &str, script: &str) -> Result<(), HostError> {
        self.with(|s| {
            s.ops += 1;
            s.nft.insert(ns.into(), script.into());
        });
        Ok(())
    }
    fn nft_has_table(&self, ns: &str, _family: &str, _name: &str) -> Result<bool, HostError> {
        Ok(self.with(|s| s.nft.contains_key(ns)))
    }
    fn sysctl_get(&self, ns: &str, key: &str) -> Result<String, HostError> {
        Ok(self.with(|s| {
            s.sysctl
                .get(&(ns.into(), key.into()))
                .cloned()
                .unwrap_or_else(|| "0".into())
        }))
    }
    fn sysctl_set(&self, ns: &str, key: &str, value: &str) -> Result<(), HostError> {
        self.with(|s| {
            s.ops += 1;
            s.sysctl.insert((ns.into(), key.into()), value.into());
        });
        Ok(())
    }
    fn gw_routes(&self, ns: &str) -> Result<Vec<Route>, HostError> {
        Ok(self.with(|s| s.routes.get(ns).cloned().unwrap_or_default()))
    }
    fn replace_route(&self, ns: &str, r: &Route) -> Result<(), HostError> {
        self.with(|s| {
            s.ops += 1;
            let v = s.routes.entry(ns.into()).or_default();
            v.retain(|x| x.dst != r.dst);
            v.push(r.clone());
        });
        Ok(())
    }
    fn del_route(&self, ns: &str, r: &Route) -> Result<(), HostError> {
        self.with(|s| {
            s.ops += 1;
            s.routes.entry(ns.into()).or_default().retain(|x| x != r);
        });
        Ok(())
    }
    fn garp(&self, ns: &str, dev: &str, ip: &str) -> Result<(), HostError> {
        self.with(|s| s.garps.push((ns.into(), dev.into(), ip.into())));
        Ok(())
    }
}
