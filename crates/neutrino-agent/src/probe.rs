//! `neutrino probe`: an "instance" made of a network namespace, for operators and tests.
//!
//! A probe boots like a VM would: its port is created (or taken) through the API and bound
//! to a host (`binding:host_id`, `device_id probe-<name>`, `device_owner
//! compute:neutrino-probe`); a namespace `probe-<name>` gets a veth whose inner end `eth0`
//! carries the port's MAC and whose outer end `tap<port>` appears in the host's namespace,
//! where that host's agent wires it and reports the port ACTIVE; a DHCP client (busybox
//! udhcpc with our script) then configures address, routes (options 121/249, else 3) and
//! MTU (option 26), and keeps renewing the lease in the background.
//!
//! Hosts of multi-host tests are namespaces: `--host-netns NS` puts the outer end there
//! (default: the caller's namespace, i.e. the machine is the host).
//!
//! `--hostname`, `--public-key` and `--user-data` attach instance data for the metadata
//! service to the probe's instance id `probe-<name>` (`/v2.0/instance-metadata`); `delete`
//! removes them.
//!
//! Owns `probe-*` namespaces it created, their processes, and `<state dir>/<name>/`.
//! Never touches a namespace or port that is not a probe's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use neutrino_host::{HostError, LinkChange, Net, Procs, Signal, exec, fs};
use serde_json::{Value, json};

use crate::client::{ApiClient, ClientError, segment};
use crate::names;

/// `device_owner` of probe ports (a `compute:` owner, so security groups apply as to VMs).
pub const DEVICE_OWNER: &str = "compute:neutrino-probe";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/run/neutrino/probes";

/// A probe operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// An API call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A host operation failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// Several cleanup steps failed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<ProbeError>),
    /// Bad input or state.
    #[error("{0}")]
    Invalid(String),
    /// Waited too long.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// What `probe create` needs.
#[derive(Debug, Clone)]
pub struct ProbeCreate {
    /// Network id or name.
    pub network: String,
    /// Existing port to take (id), instead of creating one.
    pub port: Option<String>,
    /// `binding:host_id`.
    pub host: String,
    /// Namespace of that host (None: the caller's namespace).
    pub host_netns: Option<String>,
    /// Probe name.
    pub name: String,
    /// Security groups (ids or names) of a created port.
    pub security_groups: Vec<String>,
    /// Wait for the lease.
    pub wait: bool,
    /// State directory.
    pub state_dir: PathBuf,
    /// How long to wait for ACTIVE and for the lease.
    pub timeout: Duration,
    /// Instance data for the metadata service (`PUT /v2.0/instance-metadata/probe-<name>`);
    /// nothing is attached when None.
    pub instance_data: Option<InstanceData>,
}

/// What a probe tells the metadata service about itself (neutrino's instance data).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceData {
    /// Host name served as `hostname` (OpenStack) and `hostname`/`local-hostname` (EC2).
    pub hostname: Option<String>,
    /// Public keys (name, key text).
    pub public_keys: Vec<(String, String)>,
    /// User data.
    pub user_data: Option<String>,
}

impl InstanceData {
    /// The `PUT /v2.0/instance-metadata/<id>` body.
    pub fn body(&self) -> Value {
        let keys: serde_json::Map<String, Value> = self
            .public_keys
            .iter()
            .map(|(n, k)| (n.clone(), Value::String(k.clone())))
            .collect();
        let mut doc = json!({"public_keys": keys});
        if let Some(h) = &self.hostname {
            doc["hostname"] = json!(h);
        }
        if let Some(u) = &self.user_data {
            doc["user_data"] = json!(u);
        }
        json!({"instance_metadata": doc})
    }
}

/// Attaches `data` to the probe's instance id (its ports' `device_id`).
async fn put_instance_data(
    api: &ApiClient,
    device_id: &str,
    data: &InstanceData,
) -> Result<(), ProbeError> {
    api.call::<Value, Value>(
        reqwest::Method::PUT,
        &format!("/v2.0/instance-metadata/{}", segment(device_id)),
        Some(&data.body()),
        Duration::from_secs(60),
    )
    .await?;
    Ok(())
}

/// A probe as shown by `create` and `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeInfo {
    /// Name.
    pub name: String,
    /// Port id.
    pub port_id: String,
    /// MAC.
    pub mac: String,
    /// Host.
    pub host: String,
    /// Port status.
    pub status: String,
    /// Address from the lease (create) or the port's fixed IPs (list).
    pub address: String,
    /// MTU from the lease (create only).
    pub mtu: Option<String>,
    /// Whether its namespace exists on this machine.
    pub local: bool,
}

/// `probe-<name>`.
pub fn netns(name: &str) -> String {
    format!("probe-{name}")
}

fn check_name(name: &str) -> Result<(), ProbeError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ProbeError::Invalid(format!(
            "probe name {name:?}: 1-40 characters of letters, digits, '-' and '_'"
        )))
    }
}

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# Written by `neutrino probe`: applies udhcpc's lease to the interface.
# Address and prefix, MTU (option 26), classless static routes (121, else 249), else the
# router (3); records the lease next to this script.
LEASE="$(dirname "$0")/lease"
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set dev "$interface" up
    ;;
  bound|renew)
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    routes="${staticroutes:-$msstaticroutes}"
    if [ -n "$routes" ]; then
      set -- $routes
      while [ $# -ge 2 ]; do
        if [ "$2" = "0.0.0.0" ]; then
          ip route replace "$1" dev "$interface"
        else
          ip route replace "$1" via "$2" dev "$interface"
        fi
        shift 2
      done
    elif [ -n "$router" ]; then
      for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    fi
    printf 'ip=%s\nmask=%s\nrouter=%s\nmtu=%s\ndns=%s\ndomain=%s\nroutes=%s\nlease=%s\n' \
      "$ip" "$mask" "$router" "$mtu" "$dns" "$domain" "$routes" "$lease" > "$LEASE.tmp" \
      && mv "$LEASE.tmp" "$LEASE"
    ;;
esac
exit 0
"#;

/// Reads `key=value` lines of a lease file.
pub fn read_lease(path: &Path) -> Option<std::collections::BTreeMap<String, String>> {
    let text = fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

async fn find_network(api: &ApiClient, net: &str) -> Result<Value, ProbeError> {
    match api.get(&format!("/v2.0/networks/{}", segment(net))).await {
        Ok(v) => return Ok(v["network"].clone()),
        Err(e) if e.status() == Some(404) => {}
        Err(e) => return Err(e.into()),
    }
    let v = api
        .get(&format!("/v2.0/networks?name={}", segment(net)))
        .await?;
    let list = v["networks"].as_array().cloned().unwrap_or_default();
    match list.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ProbeError::Invalid(format!("no network {net:?}"))),
        _ => Err(ProbeError::Invalid(format!(
            "several networks are named {net:?}; use its id"
        ))),
    }
}

async fn find_group(api: &ApiClient, g: &str) -> Result<String, ProbeError> {
    match api
        .get(&format!("/v2.0/security-groups/{}", segment(g)))
        .await
    {
        Ok(v) => return Ok(v["security_group"]["id"].as_str().unwrap_or(g).to_string()),
        Err(e) if e.status() == Some(404) => {}
        Err(e) => return Err(e.into()),
    }
    let v = api
        .get(&format!("/v2.0/security-groups?name={}", segment(g)))
        .await?;
    match v["security_groups"].as_array().map(Vec::as_slice) {
        Some([one]) => Ok(one["id"].as_str().unwrap_or_default().to_string()),
        _ => Err(ProbeError::Invalid(format!(
            "no single security group {g:?}"
        ))),
    }
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

async fn wait_active(api: &ApiClient, port_id: &str, timeout: Duration) -> Result<(), ProbeError> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = api
            .get(&format!("/v2.0/ports/{}", segment(port_id)))
            .await?;
        if v["port"]["status"].as_str() == Some("ACTIVE") {
            return Ok(());
        }
        if Instant::now() > deadline {
            let host = s(&v["port"], "binding:host_id");
            return Err(ProbeError::Timeout(format!(
                "port {port_id} not ACTIVE after {}s (status {}): is an agent running for host \
                 {host}? `openstack network agent list --host {host}` shows them, and \
                 `openstack network agent show ID` the errors of their last pass",
                timeout.as_secs(),
                s(&v["port"], "status"),
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn udhcpc_argv(ns: &str, dir: &Path, name: &str, wait: bool, timeout: Duration) -> Vec<String> {
    let mut v: Vec<String> = [
        "ip",
        "netns",
        "exec",
        ns,
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-O",
        "mtu",
        "-O",
        "staticroutes",
        "-O",
        "msstaticroutes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend([
        "-s".into(),
        dir.join("udhcpc.sh").display().to_string(),
        "-p".into(),
        dir.join("udhcpc.pid").display().to_string(),
        "-x".into(),
        format!("hostname:{name}"),
        "-T".into(),
        "1".into(),
        "-A".into(),
        "1".into(),
    ]);
    if wait {
        // Foreground until bound (or give up: -n), then udhcpc goes to the background and
        // keeps renewing.
        v.extend([
            "-n".into(),
            "-t".into(),
            timeout.as_secs().max(1).to_string(),
        ]);
    } else {
        v.extend(["-b".into(), "-t".into(), "0".into()]);
    }
    v
}

/// Creates a probe.
pub async fn create(
    api: &ApiClient,
    net: &dyn Net,
    c: &ProbeCreate,
) -> Result<ProbeInfo, ProbeError> {
    check_name(&c.name)?;
    let ns = netns(&c.name);
    if net.netns_list(None)?.iter().any(|n| n.name == ns) {
        return Err(ProbeError::Invalid(format!(
            "probe {} exists (namespace {ns})",
            c.name
        )));
    }
    let network = find_network(api, &c.network).await?;
    let device_id = ns.clone();
    let (port, created) = match &c.port {
        Some(p) => {
            let body = json!({"port": {"binding:host_id": c.host, "device_id": device_id,
                "device_owner": DEVICE_OWNER}});
            let v: Value = api
                .call(
                    reqwest::Method::PUT,
                    &format!("/v2.0/ports/{}", segment(p)),
                    Some(&body),
                    Duration::from_secs(60),
                )
                .await?;
            (v["port"].clone(), false)
        }
        None => {
            let mut port = json!({"network_id": network["id"], "name": c.name,
                "device_owner": DEVICE_OWNER, "device_id": device_id, "binding:host_id": c.host});
            if !c.security_groups.is_empty() {
                let mut ids = Vec::new();
                for g in &c.security_groups {
                    ids.push(find_group(api, g).await?);
                }
                port["security_groups"] = json!(ids);
            }
            let v: Value = api
                .call(
                    reqwest::Method::POST,
                    "/v2.0/ports",
                    Some(&json!({"port": port})),
                    Duration::from_secs(60),
                )
                .await?;
            (v["port"].clone(), true)
        }
    };
    let port_id = s(&port, "id");
    let mac = s(&port, "mac_address");
    // After the port exists, so the data belong to the port's project.
    if let Some(data) = &c.instance_data
        && let Err(e) = put_instance_data(api, &device_id, data).await
    {
        let mut errs = vec![e];
        if created && let Err(e) = delete_port(api, &port_id).await {
            errs.push(e);
        }
        return Err(ProbeError::Many(errs));
    }
    let dir = c.state_dir.join(&c.name);
    let plumb = || -> Result<(), ProbeError> {
        fs::write_atomic(&dir.join("port"), &format!("{port_id}\n"))?;
        fs::write_atomic(&dir.join("created"), if created { "yes\n" } else { "no\n" })?;
        fs::write_atomic(&dir.join("udhcpc.sh"), UDHCPC_SCRIPT)?;
        set_executable(&dir.join("udhcpc.sh"))?;
        net.add_netns(&ns)?;
        net.add_veth(
            c.host_netns.as_deref(),
            &names::tap(&port_id),
            "eth0",
            Some(&ns),
        )?;
        net.set_link(
            Some(&ns),
            "eth0",
            &[LinkChange::Mac(mac.clone()), LinkChange::Up],
        )?;
        Ok(())
    };
    if let Err(e) = plumb() {
        let mut errs = vec![e];
        if let Err(e) = net.del_netns(&ns) {
            errs.push(e.into());
        }
        if created && let Err(e) = delete_port(api, &port_id).await {
            errs.push(e);
        }
        if let Err(e) = fs::remove_dir(&dir) {
            errs.push(e.into());
        }
        return Err(ProbeError::Many(errs));
    }
    let argv = udhcpc_argv(&ns, &dir, &c.name, c.wait, c.timeout);
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut info = ProbeInfo {
        name: c.name.clone(),
        port_id: port_id.clone(),
        mac,
        host: c.host.clone(),
        status: s(&port, "status"),
        address: String::new(),
        mtu: None,
        local: true,
    };
    if c.wait {
        let t0 = Instant::now();
        wait_active(api, &port_id, c.timeout).await?;
        tracing::debug!(port_id = %port_id, elapsed_ms = t0.elapsed().as_millis() as u64, "port ACTIVE");
        info.status = "ACTIVE".into();
        exec::run(&argv_ref).map_err(|e| {
            ProbeError::Timeout(format!(
                "no DHCP lease for probe {} (port {port_id}): {e}",
                c.name
            ))
        })?;
        tracing::debug!(port_id = %port_id, elapsed_ms = t0.elapsed().as_millis() as u64, "lease held");
        let lease = read_lease(&dir.join("lease")).unwrap_or_default();
        info.address = lease.get("ip").cloned().unwrap_or_default();
        info.mtu = lease.get("mtu").cloned();
    } else {
        exec::spawn_detached(&argv_ref)?;
        info.address = fixed_ips(&port);
    }
    Ok(info)
}

fn set_executable(path: &Path) -> Result<(), HostError> {
    fs::set_mode(path, 0o755)
}

fn fixed_ips(port: &Value) -> String {
    port["fixed_ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["ip_address"].as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// DELETE `path`; already gone (404) is fine.
async fn delete_if_present(api: &ApiClient, path: &str) -> Result<(), ProbeError> {
    match api
        .call::<(), Value>(reqwest::Method::DELETE, path, None, Duration::from_secs(60))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.status() == Some(404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn delete_port(api: &ApiClient, id: &str) -> Result<(), ProbeError> {
    delete_if_present(api, &format!("/v2.0/ports/{}", segment(id))).await
}

async fn delete_instance_data(api: &ApiClient, device_id: &str) -> Result<(), ProbeError> {
    delete_if_present(
        api,
        &format!("/v2.0/instance-metadata/{}", segment(device_id)),
    )
    .await
}

/// Probes known to the API (ports owned by probes), with whether each is local.
pub async fn list(api: &ApiClient, net: &dyn Net) -> Result<Vec<ProbeInfo>, ProbeError> {
    let v = api
        .get(&format!(
            "/v2.0/ports?device_owner={}",
            segment(DEVICE_OWNER)
        ))
        .await?;
    let local: Vec<String> = net.netns_list(None)?.into_iter().map(|n| n.name).collect();
    let mut out: Vec<ProbeInfo> = v["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = s(p, "device_id").strip_prefix("probe-")?.to_string();
            Some(ProbeInfo {
                local: local.contains(&netns(&name)),
                port_id: s(p, "id"),
                mac: s(p, "mac_address"),
                host: s(p, "binding:host_id"),
                status: s(p, "status"),
                address: fixed_ips(p),
                mtu: None,
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Deletes a probe: its processes, namespace (the veth goes with it), port (or binding, for
/// a taken port) and state. Keeps going past failures and reports them all.
pub async fn delete(
    api: &ApiClient,
    net: &dyn Net,
    procs: &dyn Procs,
    name: &str,
    state_dir: &Path,
) -> Result<(), ProbeError> {
    check_name(name)?;
    let ns = netns(name);
    let dir = state_dir.join(name);
    let mut errs: Vec<ProbeError> = Vec::new();
    let recorded = fs::read_to_string(&dir.join("port"))
        .ok()
        .map(|s| s.trim().to_string());
    let created = fs::read_to_string(&dir.join("created"))
        .map(|s| s.trim() == "yes")
        .unwrap_or(true);
    let port_id = match recorded {
        Some(p) if !p.is_empty() => Some(p),
        _ => match api
            .get(&format!("/v2.0/ports?device_id={}", segment(&ns)))
            .await
        {
            Ok(v) => v["ports"][0]["id"].as_str().map(str::to_string),
            Err(e) => {
                errs.push(e.into());
                None
            }
        },
    };
    let exists = net.netns_list(None)?.iter().any(|n| n.name == ns);
    if exists {
        match procs.netns_pids(&ns) {
            Ok(pids) => {
                for pid in pids {
                    if let Err(e) = procs.signal(pid, Signal::Kill) {
                        errs.push(e.into());
                    }
                }
            }
            Err(e) => errs.push(e.into()),
        }
        if let Err(e) = net.del_netns(&ns) {
            errs.push(e.into());
        }
    }
    match (&port_id, created) {
        (Some(p), true) => {
            if let Err(e) = delete_port(api, p).await {
                errs.push(e);
            }
        }
        (Some(p), false) => {
            let body =
                json!({"port": {"binding:host_id": "", "device_id": "", "device_owner": ""}});
            if let Err(e) = api
                .call::<_, Value>(
                    reqwest::Method::PUT,
                    &format!("/v2.0/ports/{}", segment(p)),
                    Some(&body),
                    Duration::from_secs(60),
                )
                .await
            {
                errs.push(e.into());
            }
        }
        (None, _) if !exists => errs.push(ProbeError::Invalid(format!("no probe {name}"))),
        (None, _) => {}
    }
    // Instance data attached by `create` go with the probe (a later probe of the same name
    // must not inherit its keys or user data).
    if let Err(e) = delete_instance_data(api, &ns).await {
        errs.push(e);
    }
    if let Err(e) = fs::remove_dir(&dir) {
        errs.push(e.into());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ProbeError::Many(errs))
    }
}

/// Runs `argv` inside the probe's namespace, passing its exit status through.
pub fn exec_in(name: &str, argv: &[String]) -> Result<i32, ProbeError> {
    check_name(name)?;
    if argv.is_empty() {
        return Err(ProbeError::Invalid(
            "no command given (probe exec NAME -- CMD ...)".into(),
        ));
    }
    let ns = netns(name);
    let mut full: Vec<&str> = vec!["ip", "netns", "exec", &ns];
    full.extend(argv.iter().map(String::as_str));
    Ok(exec::run_inherit(&full)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_data_body() {
        let d = InstanceData {
            hostname: Some("web1".into()),
            public_keys: vec![("mykey".into(), "ssh-ed25519 AAAA x".into())],
            user_data: Some("#!/bin/sh\n".into()),
        };
        assert_eq!(
            d.body(),
            json!({"instance_metadata": {"hostname": "web1",
                "public_keys": {"mykey": "ssh-ed25519 AAAA x"}, "user_data": "#!/bin/sh\n"}})
        );
        assert_eq!(
            InstanceData::default().body(),
            json!({"instance_metadata": {"public_keys": {}}})
        );
    }

    #[test]
    fn names_and_dhcp_client_arguments() {
        assert!(check_name("p1").is_ok());
        assert!(check_name("bad/name").is_err());
        assert!(check_name("-x").is_err());
        let a = udhcpc_argv(
            "probe-p1",
            Path::new("/run/p/p1"),
            "p1",
            true,
            Duration::from_secs(30),
        );
        let line = a.join(" ");
        assert!(
            line.starts_with("ip netns exec probe-p1 busybox udhcpc -i eth0 -O mtu"),
            "{line}"
        );
        assert!(line.contains("-s /run/p/p1/udhcpc.sh"));
        assert!(line.ends_with("-n -t 30"));
    }

    #[test]
    fn lease_files_parse() {
        let dir = std::env::temp_dir().join(format!("neutrino-lease-{}", std::process::id()));
        fs::write_atomic(&dir.join("lease"), "ip=10.0.0.5\nmtu=1450\nrouter=\n").unwrap();
        let l = read_lease(&dir.join("lease")).unwrap();
        assert_eq!(l["ip"], "10.0.0.5");
        assert_eq!(l["mtu"], "1450");
        assert_eq!(l["router"], "");
        fs::remove_dir(&dir).unwrap();
    }
}
