//! The host-side subcommands: `neutrino agent`, `neutrino probe ...`, and the agent that
//! `neutrino all-in-one` runs for its own host.
//!
//! Owns command-line parsing and output formatting only; the agent and probe behaviour live
//! in `neutrino-agent`, every host operation in `neutrino-host`.

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use neutrino_agent::client::ApiClient;
use neutrino_agent::config::{AgentConfig, KNOWN_OPTIONS, machine_hostname};
use neutrino_agent::probe::{self, InstanceData, ProbeCreate, ProbeInfo};
use neutrino_host::{IpNet, RealProcs, fs};
use neutrino_ini::Ini;

#[derive(clap::Args, Debug)]
pub(crate) struct AgentArgs {
    /// Host name this agent serves (default: `[DEFAULT] host`, else the machine's name).
    #[arg(long)]
    host: Option<String>,
    /// INI configuration file (repeatable; later files override earlier ones).
    #[arg(long = "config-file")]
    config_file: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ProbeArgs {
    /// Directory for probe state (DHCP client script, lease).
    #[arg(long, global = true, default_value = probe::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(subcommand)]
    cmd: ProbeCmd,
}

#[derive(clap::Subcommand, Debug)]
enum ProbeCmd {
    /// Boot a probe: port (created or taken), namespace with eth0, DHCP lease.
    Create {
        /// Network (id or name).
        #[arg(long)]
        network: String,
        /// Take this existing port instead of creating one.
        #[arg(long)]
        port: Option<String>,
        /// Host to bind the port to (default: this machine's name).
        #[arg(long)]
        host: Option<String>,
        /// Namespace of that host when hosts are namespaces (tests); default: the current one.
        #[arg(long)]
        host_netns: Option<String>,
        /// Probe name (namespace `probe-NAME`); default: generated.
        #[arg(long)]
        name: Option<String>,
        /// Security group of a created port (id or name; repeatable).
        #[arg(long = "security-group")]
        security_group: Vec<String>,
        /// Return without waiting for the port to be ACTIVE and the lease.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait for ACTIVE and for the lease.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Host name the metadata service gives the probe.
        #[arg(long)]
        hostname: Option<String>,
        /// Public key for the metadata service, `NAME=FILE` (repeatable).
        #[arg(long = "public-key", value_name = "NAME=FILE")]
        public_key: Vec<String>,
        /// File whose content the metadata service serves as user data.
        #[arg(long, value_name = "FILE")]
        user_data: Option<PathBuf>,
    },
    /// List probes (ports owned by probes) and whether they live on this machine.
    List,
    /// Run a command inside a probe: `probe exec NAME -- CMD ARGS...` (exit status passed on).
    Exec {
        /// Probe name.
        name: String,
        /// Command and arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Delete a probe: processes, namespace, port (or its binding, for a taken port).
    Delete {
        /// Probe name.
        name: String,
    },
}

fn log_unknown(ini: &Ini) {
    for (s, k) in ini.keys() {
        if !KNOWN_OPTIONS.iter().any(|(ks, kk)| *ks == s && *kk == k) {
            tracing::warn!(
                section = s,
                option = k,
                "ignoring unknown configuration option"
            );
        }
    }
}

/// `neutrino agent`.
pub(crate) async fn agent(a: AgentArgs, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    let ini = Ini::load(&a.config_file)?;
    log_unknown(&ini);
    let cfg = AgentConfig::from_ini(&ini, a.host.as_deref()).context("agent configuration")?;
    tracing::debug!(?cfg.host, ?cfg.vxlan, ?cfg.interface_mappings, dhcp = cfg.dhcp.is_some(), "effective configuration");
    neutrino_agent::run(cfg, shutdown).await?;
    Ok(())
}

/// Starts the all-in-one's agent for this host in the background. Failures are logged: the
/// API keeps serving without a dataplane.
pub(crate) fn spawn_all_in_one_agent(
    ini: Ini,
    state_dir: &Path,
    identity_url: &str,
    server_url: &str,
    password: &str,
) {
    let cfg = match all_in_one_agent_config(ini, state_dir, identity_url, server_url, password) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "not starting the host agent: invalid configuration");
            return;
        }
    };
    tracing::info!(host = %cfg.host, "starting the host agent of this all-in-one");
    tokio::spawn(async move {
        if let Err(e) = neutrino_agent::run(cfg, std::future::pending()).await {
            tracing::error!(error = %e, "host agent stopped");
        }
    });
}

/// The all-in-one agent's configuration: the operator's `ini` with the all-in-one's own
/// settings (credentials, state path) and its defaults where the operator set nothing.
fn all_in_one_agent_config(
    mut ini: Ini,
    state_dir: &Path,
    identity_url: &str,
    server_url: &str,
    password: &str,
) -> Result<AgentConfig, neutrino_agent::config::AgentConfigError> {
    for (sec, key, val) in [
        ("neutrino", "identity_url", identity_url.to_string()),
        ("neutrino", "server_url", server_url.to_string()),
        ("neutrino", "username", "neutrino-agent".to_string()),
        ("neutrino", "password", password.to_string()),
        (
            "DEFAULT",
            "state_path",
            state_dir.join("agent").display().to_string(),
        ),
        ("vxlan", "local_ip", "127.0.0.1".to_string()),
        ("vxlan", "l2_population", "true".to_string()),
        // One host does everything: L2, DHCP and routers.
        ("neutrino", "agent_roles", "l2,dhcp,l3".to_string()),
        // Instances on a network without a router get metadata too (through the DHCP
        // namespace): a quick start's first network has none. Neutron's default is off.
        ("DEFAULT", "enable_isolated_metadata", "true".to_string()),
    ] {
        let own = matches!(key, "identity_url" | "server_url" | "username" | "password");
        if own || ini.get(sec, key).is_none() {
            ini.set(sec, key, &val);
        }
    }
    AgentConfig::from_ini(&ini, None)
}

fn print_probe(out: &mut impl std::io::Write, p: &ProbeInfo) -> std::io::Result<()> {
    writeln!(
        out,
        "{}\t{}\t{}\t{}\t{}\t{}\t{}{}",
        p.name,
        p.port_id,
        p.mac,
        p.host,
        p.status,
        if p.address.is_empty() {
            "-"
        } else {
            &p.address
        },
        if p.local { "local" } else { "remote" },
        p.mtu
            .as_ref()
            .map(|m| format!("\tmtu={m}"))
            .unwrap_or_default()
    )
}

fn generated_name() -> String {
    use rand::Rng;
    format!("p{:06x}", rand::rng().random_range(0..0xff_ffffu32))
}

/// The instance data of `probe create`'s `--hostname`, `--public-key NAME=FILE` and
/// `--user-data FILE`; None when none is given.
fn instance_data(
    hostname: Option<String>,
    public_keys: &[String],
    user_data: Option<&Path>,
) -> Result<Option<InstanceData>> {
    if hostname.is_none() && public_keys.is_empty() && user_data.is_none() {
        return Ok(None);
    }
    let mut keys = Vec::new();
    for spec in public_keys {
        let (name, file) = spec
            .split_once('=')
            .filter(|(n, f)| !n.is_empty() && !f.is_empty())
            .with_context(|| format!("--public-key {spec:?}: expected NAME=FILE"))?;
        let key = fs::read_to_string(Path::new(file))
            .with_context(|| format!("reading public key file {file}"))?;
        keys.push((name.to_string(), key.trim().to_string()));
    }
    let user_data = user_data
        .map(|f| {
            fs::read_to_string(f).with_context(|| format!("reading user data file {}", f.display()))
        })
        .transpose()?;
    Ok(Some(InstanceData {
        hostname,
        public_keys: keys,
        user_data,
    }))
}

/// `neutrino probe ...`.
pub(crate) async fn probe(a: ProbeArgs) -> Result<()> {
    if let ProbeCmd::Exec { name, cmd } = &a.cmd {
        let code = probe::exec_in(name, cmd)?;
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
    let creds = neutrino_agent::clouds::credentials()?;
    let api = ApiClient::new(creds, None)?;
    let net = IpNet;
    let mut out = std::io::stdout().lock();
    match a.cmd {
        ProbeCmd::Create {
            network,
            port,
            host,
            host_netns,
            name,
            security_group,
            no_wait,
            timeout,
            hostname,
            public_key,
            user_data,
        } => {
            let instance_data = instance_data(hostname, &public_key, user_data.as_deref())?;
            let c = ProbeCreate {
                network,
                port,
                host: host.unwrap_or_else(machine_hostname),
                host_netns,
                name: name.unwrap_or_else(generated_name),
                security_groups: security_group,
                wait: !no_wait,
                state_dir: a.state_dir,
                timeout: Duration::from_secs(timeout),
                instance_data,
            };
            let info = probe::create(&api, &net, &c).await?;
            print_probe(&mut out, &info)?;
        }
        ProbeCmd::List => {
            for p in probe::list(&api, &net).await? {
                print_probe(&mut out, &p)?;
            }
        }
        ProbeCmd::Delete { name } => {
            probe::delete(&api, &net, &RealProcs, &name, &a.state_dir).await?;
        }
        ProbeCmd::Exec { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_all_in_one_agent_serves_isolated_metadata_unless_told_not_to() {
        let cfg = |text: &str| {
            let ini = Ini::parse(text, "t").unwrap();
            all_in_one_agent_config(
                ini,
                Path::new("/st"),
                "http://127.0.0.1:5000/v3",
                "http://127.0.0.1:9696",
                "pw",
            )
            .unwrap()
        };
        let c = cfg("");
        assert!(c.dhcp.as_ref().unwrap().enable_isolated_metadata);
        assert!(c.metadata.as_ref().unwrap().isolated);
        assert_eq!(c.state_path, Path::new("/st/agent"));
        let off = cfg("[DEFAULT]\nenable_isolated_metadata = false\n");
        assert!(!off.dhcp.as_ref().unwrap().enable_isolated_metadata);
    }

    #[test]
    fn instance_data_flags() {
        assert_eq!(instance_data(None, &[], None).unwrap(), None);
        let dir = std::env::temp_dir().join(format!("neutrino-flags-{}", std::process::id()));
        let key = dir.join("key.pub");
        let ud = dir.join("user-data");
        fs::write_atomic(&key, "ssh-ed25519 AAAA op@x\n").unwrap();
        fs::write_atomic(&ud, "#!/bin/sh\necho hi\n").unwrap();
        let spec = format!("mykey={}", key.display());
        let d = instance_data(Some("web1".into()), &[spec], Some(&ud))
            .unwrap()
            .unwrap();
        assert_eq!(d.hostname.as_deref(), Some("web1"));
        assert_eq!(
            d.public_keys,
            [("mykey".to_string(), "ssh-ed25519 AAAA op@x".to_string())]
        );
        assert_eq!(d.user_data.as_deref(), Some("#!/bin/sh\necho hi\n"));
        for bad in ["nokey", "=file", "name="] {
            assert!(
                instance_data(None, &[bad.to_string()], None).is_err(),
                "{bad}"
            );
        }
        let missing = format!("k={}", dir.join("missing").display());
        assert!(instance_data(None, &[missing], None).is_err());
        fs::remove_dir(&dir).unwrap();
    }
}
