//! The `neutrino` binary: subcommands `server`, `all-in-one`, `agent`, `probe`, `db upgrade`,
//! `bench`.
//!
//! Owns process start-up only: reading configuration files, opening and migrating the store,
//! wiring identity (embedded Keystone or an external one) into the network API, binding the
//! listeners, and shutting down on SIGINT/SIGTERM. Behaviour lives in the library crates;
//! this file must never implement API semantics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use neutrino_api::{ApiState, AuthFuture, Authenticate};
use neutrino_core::Db;
use neutrino_core::config::{Config, Ini};
use neutrino_host::fs;
use neutrino_identity::{Identity, IdentityConfig, RemoteKeystone, TokenValidator};

mod bench;
mod host_cmds;

/// OpenStack Networking (Neutron), rebuilt in Rust.
#[derive(Parser, Debug)]
#[command(name = "neutrino", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the API server (Neutron v2.0 API, and the embedded identity service unless
    /// [keystone_authtoken] points at an external Keystone).
    Server {
        /// INI configuration file (repeatable; later files override earlier ones).
        #[arg(long = "config-file")]
        config_file: Vec<PathBuf>,
    },
    /// Run everything on this host with SQLite in a state directory: identity, API, and the
    /// host agent for this host (unless `--no-agent`).
    AllInOne(AllInOne),
    /// Run the host agent for one host (L2: Linux bridge + VXLAN; DHCP: dnsmasq; L3: router
    /// namespaces; metadata: haproxy + proxy).
    Agent(host_cmds::AgentArgs),
    /// Namespace "instances" plugged into ports, for debugging and tests.
    Probe(host_cmds::ProbeArgs),
    /// Database schema management.
    Db {
        #[command(subcommand)]
        cmd: DbCmd,
    },
    /// Measure port-create throughput and list latency against an in-process server.
    Bench(bench::BenchArgs),
}

#[derive(clap::Args, Debug)]
struct AllInOne {
    /// Directory for the database, generated credentials, clouds.yaml and the agent's files
    /// (`agent/`, daemon logs included); any mode (0700 in /root is fine).
    #[arg(long, default_value = "neutrino-state")]
    state_dir: PathBuf,
    /// INI configuration file (repeatable), same options as `server`.
    #[arg(long = "config-file")]
    config_file: Vec<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_host: String,
    /// Identity (Keystone v3) port.
    #[arg(long)]
    identity_port: Option<u16>,
    /// Network API port.
    #[arg(long)]
    api_port: Option<u16>,
    /// Run the host agent for this host (L2, DHCP, security groups, L3 in this machine's
    /// network namespace), so probes work out of the box; this is the default
    /// (`[neutrino] all_in_one_agent = true`). Test suites that start several all-in-ones on
    /// one machine pass `--no-agent`, since their agents would share one namespace.
    #[arg(long, conflicts_with = "no_agent")]
    agent: bool,
    /// Do not run the host agent (API only).
    #[arg(long)]
    no_agent: bool,
}

#[derive(Subcommand, Debug)]
enum DbCmd {
    /// Apply all pending migrations (forward only).
    Upgrade {
        /// INI configuration file (repeatable).
        #[arg(long = "config-file")]
        config_file: Vec<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging();
    let workers = match &cli.cmd {
        Cmd::Server { config_file } => Config::load(config_file)?.api_workers,
        _ => 0,
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if workers > 0 {
        rt.worker_threads(workers);
    }
    let rt = rt.build().context("starting the async runtime")?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Server { config_file } => server(Config::load(&config_file)?).await,
            Cmd::AllInOne(a) => all_in_one(a).await,
            Cmd::Db {
                cmd: DbCmd::Upgrade { config_file },
            } => {
                let cfg = Config::load(&config_file)?;
                let url = cfg
                    .database_connection
                    .clone()
                    .context("[database] connection is not set")?;
                let db = Db::connect(&url).await?;
                db.migrate().await?;
                tracing::info!("database is at the latest schema");
                Ok(())
            }
            Cmd::Bench(args) => bench::run(args).await,
            Cmd::Agent(args) => host_cmds::agent(args, shutdown_signal()).await,
            Cmd::Probe(args) => host_cmds::probe(args).await,
        }
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEUTRINO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Options of this binary in the `[neutrino]` section (not Neutron's).
const OWN_OPTIONS: &[(&str, &str)] = &[
    ("neutrino", "all_in_one_agent"),
    ("neutrino", "admin_password"),
    ("neutrino", "agent_password"),
    ("neutrino", "identity_port"),
    ("neutrino", "identity_bind_host"),
    ("neutrino", "token_expiration"),
    ("neutrino", "public_endpoint"),
    ("neutrino", "region"),
];

fn identity_config(cfg: &Config, host: &str, identity_port: u16) -> Result<IdentityConfig> {
    let public_host = if host == "0.0.0.0" { "127.0.0.1" } else { host };
    let network_url = cfg
        .ini
        .opt_string("neutrino", "public_endpoint")
        .unwrap_or_else(|| format!("http://{public_host}:{}", cfg.bind_port));
    Ok(IdentityConfig {
        token_expiration_secs: cfg.ini.int("neutrino", "token_expiration", 3600)?,
        identity_url: format!("http://{public_host}:{identity_port}"),
        network_url,
        region: cfg.ini.string("neutrino", "region", "RegionOne"),
    })
}

fn auth_hook(validator: TokenValidator) -> Authenticate {
    Arc::new(move |token: String| -> AuthFuture {
        let v = validator.clone();
        Box::pin(async move { v.validate(&token).await })
    })
}

async fn open_store(url: &str) -> Result<Db> {
    let db = Db::connect(url).await?;
    db.migrate().await?;
    Ok(db)
}

struct Running {
    tasks: Vec<tokio::task::JoinHandle<Result<()>>>,
}

async fn bind(host: &str, port: u16, what: &str) -> Result<tokio::net::TcpListener> {
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .with_context(|| format!("invalid {what} address {host}:{port}"))?;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what}"))
}

fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(anyhow::Error::from)
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// How long open requests may finish after SIGTERM/SIGINT. Agents hold change long-polls
/// open for up to a minute; a stopping server must not wait for them.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

impl Running {
    async fn wait(self) -> Result<()> {
        let all = async {
            for t in self.tasks {
                t.await??;
            }
            Ok::<(), anyhow::Error>(())
        };
        tokio::select! {
            r = all => r,
            _ = async {
                shutdown_signal().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::info!("open requests did not finish in time; stopping anyway");
                Ok(())
            }
        }
    }
}

/// Starts the network API and (unless an external Keystone is configured) the identity API.
async fn start(
    cfg: Config,
    db: Db,
    identity_port: u16,
    admin_password: Option<&str>,
    agent_password: Option<&str>,
) -> Result<Running> {
    let known: Vec<(&str, &str)> = OWN_OPTIONS
        .iter()
        .chain(neutrino_api::ml2::KNOWN_OPTIONS)
        .chain(neutrino_api::l3_scheduler::KNOWN_OPTIONS)
        .chain(neutrino_api::agents::KNOWN_OPTIONS)
        .chain(neutrino_api::edge::KNOWN_OPTIONS)
        .chain(neutrino_agent::config::KNOWN_OPTIONS)
        .copied()
        .collect();
    cfg.log_unknown(&known);
    neutrino_api::agents::AgentConfig::from_ini(&cfg.ini)?;
    neutrino_api::edge::EdgeConfig::from_ini(&cfg.ini)?;
    let policy = neutrino_api::policy::Policy::load(cfg.policy_file.as_deref().map(Path::new))?;
    let host = cfg.bind_host.clone();
    let mut tasks = Vec::new();
    let validator = match &cfg.keystone_authtoken {
        Some(ks) => {
            tracing::info!(auth_url = %ks.auth_url, "validating tokens against an external Keystone");
            TokenValidator::Remote(RemoteKeystone::new(ks.clone()))
        }
        None => {
            let idcfg = identity_config(&cfg, &host, identity_port)?;
            let identity = Identity::new(db.clone(), idcfg);
            if let Some(pw) = admin_password {
                identity.bootstrap(pw).await?;
            }
            // Host agents authenticate as this service user (admin in the service project)
            // to reach /agent/v1.
            match agent_password {
                Some(pw) => identity
                    .ensure_service_user(AGENT_USER, pw)
                    .await
                    .context("creating the neutrino-agent service user")?,
                None => tracing::info!(
                    "[neutrino] agent_password is not set: no {AGENT_USER} service user"
                ),
            }
            let id_host = cfg.ini.string("neutrino", "identity_bind_host", &host);
            let listener = bind(&id_host, identity_port, "identity API").await?;
            tracing::info!(addr = %listener.local_addr()?, "identity (Keystone v3) listening");
            tasks.push(serve(listener, identity.router()));
            TokenValidator::Local(identity)
        }
    };
    let port = cfg.bind_port;
    let state = ApiState::try_new(db, cfg, policy, auth_hook(validator))?;
    // DHCP failover and change-log retention; ends with the process.
    tokio::spawn(neutrino_api::periodic::run(state.clone()));
    // On SIGTERM/SIGINT, agents' open long-polls answer at once so the graceful shutdown
    // does not wait for them.
    let stopping = state.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stopping.stop();
    });
    let listener = bind(&host, port, "network API").await?;
    tracing::info!(addr = %listener.local_addr()?, "network API (Neutron v2.0) listening");
    tasks.push(serve(listener, neutrino_api::router(state)));
    Ok(Running { tasks })
}

async fn server(cfg: Config) -> Result<()> {
    let url = cfg
        .database_connection
        .clone()
        .context("[database] connection is not set (sqlite://PATH or postgresql://...)")?;
    let db = open_store(&url).await?;
    let identity_port = u16::try_from(cfg.ini.int("neutrino", "identity_port", 5000)?)
        .context("[neutrino] identity_port is not a TCP port")?;
    let admin_password = cfg.ini.opt_string("neutrino", "admin_password");
    let agent_password = cfg.ini.opt_string("neutrino", "agent_password");
    start(
        cfg,
        db,
        identity_port,
        admin_password.as_deref(),
        agent_password.as_deref(),
    )
    .await?
    .wait()
    .await
}

fn random_password() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// The user host agents authenticate as.
const AGENT_USER: &str = "neutrino-agent";

/// A password kept in a private file of the state directory, generated on first use.
fn read_or_generate(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(p) if !p.trim().is_empty() => Ok(p.trim().to_string()),
        _ => {
            let p = random_password();
            write_private(path, &format!("{p}\n"))?;
            Ok(p)
        }
    }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    Ok(fs::write_private(path, text)?)
}

/// The metadata service and the all-in-one's metadata proxy sign with a shared secret; unless
/// one is configured, it is generated once and kept in `<state dir>/metadata-secret` (0600),
/// like the agent's password.
fn ensure_metadata_secret(ini: &mut Ini, state_dir: &Path) -> Result<()> {
    if neutrino_core::config::metadata_secret(ini).is_none() {
        let secret = read_or_generate(&state_dir.join("metadata-secret"))?;
        ini.set("metadata", "metadata_proxy_shared_secret", &secret);
    }
    Ok(())
}

fn clouds_yaml(auth_url: &str, password: &str, region: &str) -> String {
    format!(
        "# Written by `neutrino all-in-one`.\n\
         clouds:\n  neutrino:\n    auth:\n      auth_url: {auth_url}\n      username: admin\n      password: {password}\n      project_name: admin\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: {region}\n    identity_api_version: 3\n    interface: public\n"
    )
}

async fn all_in_one(a: AllInOne) -> Result<()> {
    fs::create_dir_all(&a.state_dir)
        .with_context(|| format!("creating state directory {}", a.state_dir.display()))?;
    let dir = fs::canonicalize(&a.state_dir)?;
    let mut ini = Ini::load(&a.config_file)?;
    if ini.get("database", "connection").is_none() {
        ini.set(
            "database",
            "connection",
            &format!("sqlite://{}", dir.join("neutrino.sqlite").display()),
        );
    }
    if ini.get("DEFAULT", "bind_host").is_none() {
        ini.set("DEFAULT", "bind_host", &a.bind_host);
    }
    // A quick start wants self-service networks that work on one Linux host: VXLAN project
    // networks (the kernel here has no GRE or Geneve), flat/VLAN providers on physnet1.
    for (sec, key, val) in [
        ("ml2", "type_drivers", "local,flat,vlan,vxlan"),
        ("ml2", "tenant_network_types", "vxlan"),
        ("ml2", "mechanism_drivers", "linuxbridge,l2population"),
        ("ml2_type_vxlan", "vni_ranges", "1:1000"),
        ("ml2_type_vlan", "network_vlan_ranges", "physnet1"),
        ("ml2_type_flat", "flat_networks", "*"),
    ] {
        let project_types_set = sec == "ml2"
            && key == "tenant_network_types"
            && ini.get("ml2", "project_network_types").is_some();
        if ini.get(sec, key).is_none() && !project_types_set {
            ini.set(sec, key, val);
        }
    }
    if let Some(p) = a.api_port {
        ini.set("DEFAULT", "bind_port", &p.to_string());
    }
    if let Some(p) = a.identity_port {
        ini.set("neutrino", "identity_port", &p.to_string());
    }
    ensure_metadata_secret(&mut ini, &dir)?;
    let cfg = Config::from_ini(ini)?;
    if cfg.keystone_authtoken.is_some() {
        bail!("all-in-one runs its own identity service; remove [keystone_authtoken]");
    }
    let identity_port = u16::try_from(cfg.ini.int("neutrino", "identity_port", 5000)?)
        .context("[neutrino] identity_port is not a TCP port")?;
    let pw_file = dir.join("admin-password");
    let password = match fs::read_to_string(&pw_file) {
        Ok(p) if !p.trim().is_empty() => p.trim().to_string(),
        _ => {
            let p = random_password();
            write_private(&pw_file, &format!("{p}\n"))?;
            p
        }
    };
    let url = cfg.database_connection.clone().context("no database")?;
    let db = open_store(&url).await?;
    let host = cfg.bind_host.clone();
    let public_host = if host == "0.0.0.0" {
        "127.0.0.1".to_string()
    } else {
        host.clone()
    };
    let auth_url = format!("http://{public_host}:{identity_port}/v3");
    let region = cfg.ini.string("neutrino", "region", "RegionOne");
    let api_port = cfg.bind_port;
    let agent_password = match cfg.ini.opt_string("neutrino", "agent_password") {
        Some(p) => p,
        None => read_or_generate(&dir.join("agent-password"))?,
    };
    let mut agent_ini = cfg.ini.clone();
    // The agent reads metadata_agent.ini's spelling; give it the secret the server uses.
    if let Some(secret) = &cfg.metadata_proxy_shared_secret {
        agent_ini.set("DEFAULT", "metadata_proxy_shared_secret", secret);
    }
    let with_agent =
        a.agent || (!a.no_agent && cfg.ini.boolean("neutrino", "all_in_one_agent", true)?);
    let running = start(
        cfg,
        db,
        identity_port,
        Some(&password),
        Some(&agent_password),
    )
    .await?;
    if with_agent {
        host_cmds::spawn_all_in_one_agent(
            agent_ini,
            &dir,
            &auth_url,
            &format!("http://{public_host}:{api_port}"),
            &agent_password,
        );
    }
    let clouds = dir.join("clouds.yaml");
    write_private(&clouds, &clouds_yaml(&auth_url, &password, &region))?;
    // The client scripts/setup installs, and this binary, when they are not on PATH yet (the
    // README's commands call them by name).
    let mut path = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        let venv = Path::new(&home).join(".cache/neutrino/venv/bin");
        if venv.join("openstack").exists() && !on_path("openstack") {
            path.push(venv.display().to_string());
        }
    }
    if let Some(bin) = std::env::current_exe().ok().and_then(|e| {
        e.parent()
            .filter(|_| !on_path("neutrino"))
            .map(Path::to_path_buf)
    }) {
        path.push(bin.display().to_string());
    }
    let path_line = if path.is_empty() {
        String::new()
    } else {
        format!("  export PATH={}:$PATH\n", path.join(":"))
    };
    let mut out = std::io::stderr().lock();
    use std::io::Write;
    let _ = writeln!(
        out,
        "\nneutrino all-in-one is running.\n  identity:    {auth_url}\n  network API: http://{public_host}:{api_port}/v2.0\n  state:       {}\n\nUse it with the openstack client:\n{path_line}  export OS_CLIENT_CONFIG_FILE={} OS_CLOUD=neutrino\n  openstack network list\n\nAdmin password: {} (also in {})\n",
        dir.display(),
        clouds.display(),
        password,
        pw_file.display()
    );
    drop(out);
    running.wait().await
}

/// Whether `program` is found in a directory of `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_in_one_metadata_secret() {
        let dir = std::env::temp_dir().join(format!("neutrino-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut ini = Ini::default();
        ensure_metadata_secret(&mut ini, &dir).unwrap();
        let first = Config::from_ini(ini)
            .unwrap()
            .metadata_proxy_shared_secret
            .unwrap();
        assert!(first.len() >= 20, "{first}");
        let file = dir.join("metadata-secret");
        assert_eq!(fs::read_to_string(&file).unwrap().trim(), first);
        assert_eq!(fs::mode(&file).unwrap(), 0o600);
        // Kept across restarts.
        let mut again = Ini::default();
        ensure_metadata_secret(&mut again, &dir).unwrap();
        assert_eq!(
            again.get("metadata", "metadata_proxy_shared_secret"),
            Some(first.as_str())
        );
        // A configured secret wins and is not replaced.
        let mut configured =
            Ini::parse("[neutron]\nmetadata_proxy_shared_secret = mine\n", "t").unwrap();
        ensure_metadata_secret(&mut configured, &dir).unwrap();
        let cfg = Config::from_ini(configured).unwrap();
        assert_eq!(cfg.metadata_proxy_shared_secret.as_deref(), Some("mine"));
        fs::remove_dir(&dir).unwrap();
    }
}
