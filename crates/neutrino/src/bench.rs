//! `neutrino bench`: throughput and latency figures for the network API, measured end to end
//! over HTTP (token validation, policy, store) against an in-process server.
//!
//! Runs on a fresh temporary SQLite file, or on a fresh PostgreSQL database created next to
//! `--database` and dropped afterwards. It prints figures; it never asserts on them (machines
//! are noisy), and it only ever talks to 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use neutrino_api::ApiState;
use neutrino_core::Db;
use neutrino_core::config::Config;
use neutrino_identity::{Identity, IdentityConfig, TokenValidator};
use serde_json::{Value, json};

/// Options of `neutrino bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// `sqlite` (temporary file) or a PostgreSQL URL of a maintenance database, e.g.
    /// postgresql://postgres@127.0.0.1:5432/postgres (a scratch database is created).
    #[arg(long, default_value = "sqlite")]
    database: String,
    /// Ports to create.
    #[arg(long, default_value_t = 10_000)]
    ports: usize,
    /// Concurrent clients creating ports (and, in `lists` mode, listing them).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// `create`: port-create throughput, a full listing and a single GET. `lists`: the
    /// filtered and paged lookups Nova and the CLI make (`ports?network_id=N&limit=50`,
    /// `ports?fixed_ips=ip_address=X`) at each collection size of `--sizes`.
    #[arg(long, default_value = "create")]
    mode: String,
    /// `lists` mode: collection sizes (ports on one network) at which to measure, ascending.
    #[arg(long, value_delimiter = ',', default_value = "100,10000")]
    sizes: Vec<usize>,
    /// `lists` mode: requests per query kind and size, spread over `--concurrency` clients.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
}

struct Scratch {
    url: String,
    drop: Option<(String, String)>,
    dir: Option<std::path::PathBuf>,
}

async fn scratch(database: &str) -> Result<Scratch> {
    if database == "sqlite" {
        let dir = std::env::temp_dir().join(format!("neutrino-bench-{}", std::process::id()));
        neutrino_host::fs::create_dir_all(&dir)?;
        return Ok(Scratch {
            url: format!("sqlite://{}/bench.sqlite", dir.display()),
            drop: None,
            dir: Some(dir),
        });
    }
    if !database.starts_with("postgres") {
        bail!("--database must be 'sqlite' or a postgresql:// URL");
    }
    let name = format!("neutrino_bench_{}", std::process::id());
    let admin = Db::connect(database).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(admin.reader())
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin.reader())
        .await?;
    admin.close().await;
    let base = database
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(database);
    Ok(Scratch {
        url: format!("{base}/{name}"),
        drop: Some((database.to_string(), name)),
        dir: None,
    })
}

impl Scratch {
    async fn cleanup(self) {
        if let Some((base, name)) = self.drop
            && let Ok(admin) = Db::connect(&base).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(admin.reader())
                .await;
            admin.close().await;
        }
        if let Some(d) = self.dir {
            let _ = neutrino_host::fs::remove_dir(&d);
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the benchmark and prints its figures.
pub(crate) async fn run(args: BenchArgs) -> Result<()> {
    let s = scratch(&args.database).await?;
    let res = bench(&s.url, &args).await;
    s.cleanup().await;
    res
}

async fn bench(url: &str, args: &BenchArgs) -> Result<()> {
    let db = Db::connect(url).await?;
    db.migrate().await?;
    let id_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let id_addr = id_listener.local_addr()?;
    let api_addr = api_listener.local_addr()?;
    let identity = Identity::new(
        db.clone(),
        IdentityConfig {
            token_expiration_secs: 3600,
            identity_url: format!("http://{id_addr}"),
            network_url: format!("http://{api_addr}"),
            region: "RegionOne".into(),
        },
    );
    identity.bootstrap("bench-password").await?;
    let id_app = identity.router();
    tokio::spawn(async move { axum::serve(id_listener, id_app).await });
    let mut cfg = Config::default();
    cfg.quotas.insert("port".into(), -1);
    let policy = neutrino_api::policy::Policy::defaults();
    let validator = TokenValidator::Local(identity);
    let auth: neutrino_api::Authenticate = Arc::new(move |t: String| -> neutrino_api::AuthFuture {
        let v = validator.clone();
        Box::pin(async move { v.validate(&t).await })
    });
    let app = neutrino_api::router(ApiState::new(db.clone(), cfg, policy, auth));
    tokio::spawn(async move { axum::serve(api_listener, app).await });

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let resp = client
        .post(format!("http://{id_addr}/v3/auth/tokens"))
        .json(
            &json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"name": "Default"}, "password": "bench-password"}}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}),
        )
        .send()
        .await?;
    let token = resp
        .headers()
        .get("x-subject-token")
        .context("no token issued")?
        .to_str()?
        .to_string();
    let api = format!("http://{api_addr}/v2.0");
    let post = |path: &str, body: Value| {
        client
            .post(format!("{api}{path}"))
            .header("x-auth-token", &token)
            .json(&body)
            .send()
    };
    let net: Value = post("/networks", json!({"network": {"name": "bench"}}))
        .await?
        .json()
        .await?;
    let net_id = net["network"]["id"]
        .as_str()
        .context("network id")?
        .to_string();
    let r = post(
        "/subnets",
        json!({"subnet": {"network_id": net_id, "cidr": "10.128.0.0/16", "ip_version": 4}}),
    )
    .await?;
    if r.status() != 201 {
        bail!("subnet create failed: {}", r.text().await?);
    }

    let env = Env {
        client,
        token,
        api,
        net_id,
        store: if url.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgresql"
        },
    };
    let res = match args.mode.as_str() {
        "create" => create_mode(&env, args).await,
        "lists" => lists_mode(&env, args).await,
        m => Err(anyhow::anyhow!("unknown --mode {m:?}: use create or lists")),
    };
    db.close().await;
    res
}

/// A running server with an admin token and one network with a /16 subnet.
struct Env {
    client: reqwest::Client,
    token: String,
    api: String,
    net_id: String,
    store: &'static str,
}

async fn create_mode(env: &Env, args: &BenchArgs) -> Result<()> {
    let Env {
        client,
        token,
        api,
        net_id,
        store,
    } = env;
    println_figure(&format!(
        "store: {}   ports: {}   concurrency: {}",
        store, args.ports, args.concurrency
    ));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let window = (args.ports / 5).max(1);
    let marks = Arc::new(tokio::sync::Mutex::new(Vec::<(usize, Instant)>::new()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, token, api, net_id, next, marks) = (
            client.clone(),
            token.clone(),
            api.clone(),
            net_id.clone(),
            next.clone(),
            marks.clone(),
        );
        let total = args.ports;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                let r = client
                    .post(format!("{api}/ports"))
                    .header("x-auth-token", &token)
                    .json(&json!({"port": {"network_id": net_id, "name": format!("p{i}")}}))
                    .send()
                    .await?;
                if r.status() != 201 {
                    bail!("port create failed: {} {}", r.status(), r.text().await?);
                }
                lat.push(t.elapsed());
                if (i + 1) % window == 0 {
                    marks.lock().await.push((i + 1, Instant::now()));
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let total = start.elapsed();
    lat.sort();
    println_figure(&format!(
        "port create: {:.0}/s overall ({} in {:.2}s); latency p50 {:.2} ms, p99 {:.2} ms",
        args.ports as f64 / total.as_secs_f64(),
        args.ports,
        total.as_secs_f64(),
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3
    ));
    let mut marks = marks.lock().await.clone();
    marks.sort();
    let mut prev = (0usize, start);
    for (n, at) in marks {
        let rate = (n - prev.0) as f64 / at.duration_since(prev.1).as_secs_f64();
        println_figure(&format!("  ports {:>6}..{:<6} {:>8.0}/s", prev.0, n, rate));
        prev = (n, at);
    }

    let get = |path: String| {
        client
            .get(path)
            .header("x-auth-token", token.as_str())
            .send()
    };
    let mut list_lat = Vec::new();
    let mut count = 0;
    for _ in 0..5 {
        // Time to the last byte of the response; parsing the ~10 MB body is the client's
        // cost, not the server's, so it is done outside the timed part.
        let t = Instant::now();
        let body = get(format!("{api}/ports")).await?.bytes().await?;
        list_lat.push(t.elapsed());
        let v: Value = serde_json::from_slice(&body)?;
        count = v["ports"].as_array().map(Vec::len).unwrap_or(0);
    }
    list_lat.sort();
    println_figure(&format!(
        "list {count} ports: p50 {:.1} ms, min {:.1} ms",
        pct(&list_lat, 0.5).as_secs_f64() * 1e3,
        list_lat[0].as_secs_f64() * 1e3
    ));
    let v: Value = get(format!("{api}/ports?limit=1")).await?.json().await?;
    let one = v["ports"][0]["id"].as_str().context("a port")?.to_string();
    let mut get_lat = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        let r = get(format!("{api}/ports/{one}")).await?;
        r.bytes().await?;
        get_lat.push(t.elapsed());
    }
    get_lat.sort();
    println_figure(&format!(
        "GET one port: p50 {:.3} ms, p99 {:.3} ms",
        pct(&get_lat, 0.5).as_secs_f64() * 1e3,
        pct(&get_lat, 0.99).as_secs_f64() * 1e3
    ));
    Ok(())
}

/// Creates ports `from..to` on the bench network with `concurrency` clients; returns their
/// first fixed IPs.
async fn create_ports(
    env: &Env,
    from: usize,
    to: usize,
    concurrency: usize,
) -> Result<Vec<String>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(from));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, token, api, net_id, next) = (
            env.client.clone(),
            env.token.clone(),
            env.api.clone(),
            env.net_id.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut ips = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= to {
                    break;
                }
                let r = client
                    .post(format!("{api}/ports"))
                    .header("x-auth-token", &token)
                    .json(&json!({"port": {"network_id": net_id, "name": format!("p{i}")}}))
                    .send()
                    .await?;
                if r.status() != 201 {
                    bail!("port create failed: {} {}", r.status(), r.text().await?);
                }
                let v: Value = r.json().await?;
                if let Some(ip) = v["port"]["fixed_ips"][0]["ip_address"].as_str() {
                    ips.push(ip.to_string());
                }
            }
            Ok::<_, anyhow::Error>(ips)
        }));
    }
    let mut ips = Vec::new();
    for t in tasks {
        ips.extend(t.await??);
    }
    Ok(ips)
}

/// Sends `requests` GETs (paths from `path(i)`) over `concurrency` clients; checks each answer
/// is 200 with `want` items when given; returns the sorted latencies and the wall time.
async fn hammer(
    env: &Env,
    requests: usize,
    concurrency: usize,
    path: Arc<dyn Fn(usize) -> String + Send + Sync>,
    want: Option<usize>,
) -> Result<(Vec<Duration>, Duration)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, token, api, next, path) = (
            env.client.clone(),
            env.token.clone(),
            env.api.clone(),
            next.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let url = format!("{api}{}", path(i));
                let t = Instant::now();
                let r = client
                    .get(&url)
                    .header("x-auth-token", &token)
                    .send()
                    .await?;
                let status = r.status();
                let body = r.bytes().await?;
                lat.push(t.elapsed());
                if status != 200 {
                    bail!("GET {url}: {status}");
                }
                if let Some(want) = want {
                    let v: Value = serde_json::from_slice(&body)?;
                    let got = v["ports"].as_array().map(Vec::len).unwrap_or(0);
                    if got != want {
                        bail!("GET {url}: {got} ports, expected {want}");
                    }
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let wall = start.elapsed();
    lat.sort();
    Ok((lat, wall))
}

/// `--mode lists`: the lookups whose cost must not grow with the collection.
async fn lists_mode(env: &Env, args: &BenchArgs) -> Result<()> {
    println_figure(&format!(
        "store: {}   concurrency: {}   requests per figure: {}",
        env.store, args.concurrency, args.requests
    ));
    let mut ips: Vec<String> = Vec::new();
    for &size in &args.sizes {
        if size > ips.len() {
            let more = create_ports(env, ips.len(), size, args.concurrency).await?;
            ips.extend(more);
        }
        let page = size.min(50);
        let net = env.net_id.clone();
        let by_net: Arc<dyn Fn(usize) -> String + Send + Sync> =
            Arc::new(move |_| format!("/ports?network_id={net}&limit=50"));
        let (lat, wall) = hammer(env, args.requests, args.concurrency, by_net, Some(page)).await?;
        report(
            &format!("{size:>6} ports  network_id=N&limit=50"),
            &lat,
            wall,
        );
        // Spread lookups over the whole collection, the way Nova looks up any port.
        let all = Arc::new(ips.clone());
        let by_ip: Arc<dyn Fn(usize) -> String + Send + Sync> = Arc::new(move |i| {
            let ip = &all[(i.wrapping_mul(7919)) % all.len()];
            format!("/ports?fixed_ips=ip_address%3D{ip}")
        });
        let (lat, wall) = hammer(env, args.requests, args.concurrency, by_ip, Some(1)).await?;
        report(
            &format!("{size:>6} ports  fixed_ips=ip_address=X"),
            &lat,
            wall,
        );
    }
    Ok(())
}

fn report(what: &str, lat: &[Duration], wall: Duration) {
    println_figure(&format!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms, {:.0} req/s",
        pct(lat, 0.5).as_secs_f64() * 1e3,
        pct(lat, 0.99).as_secs_f64() * 1e3,
        lat.len() as f64 / wall.as_secs_f64()
    ));
}

#[allow(clippy::print_stdout)]
fn println_figure(s: &str) {
    println!("{s}");
}
