//! Test harness for the network API: a real server on 127.0.0.1 over a fresh store.
//!
//! The store is a temporary SQLite file, or a fresh PostgreSQL database when
//! `NEUTRINO_TEST_PG_URL` is set (e.g. `postgresql://postgres@127.0.0.1:5432/postgres`; a
//! database with a random name is created and dropped). Tokens are fake and spell the caller:
//! `admin` (admin of project `admin-project`), `member:<project>`, `reader:<project>`,
//! `role:<role>:<project>`. Identity itself is tested in neutrino-identity.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use neutrino_api::{ApiState, AuthFuture, Authenticate};
use neutrino_core::config::{Config, Ini};
use neutrino_core::{ApiError, Context, Db};
use serde_json::Value;

/// A running API server.
pub struct TestServer {
    /// Base URL, e.g. `http://127.0.0.1:12345`.
    pub url: String,
    /// The store (for direct inspection).
    pub db: Db,
    /// The server's state (e.g. to stop it).
    pub state: ApiState,
    client: reqwest::Client,
    _dir: tempdir::Dir,
    pg_drop: Option<(String, String)>,
}

mod tempdir {
    /// A temporary directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!("neutrino-test-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&p).expect("create temp dir");
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn fake_auth() -> Authenticate {
    Arc::new(|token: String| -> AuthFuture {
        Box::pin(async move {
            let parts: Vec<&str> = token.split(':').collect();
            let (roles, project): (Vec<&str>, &str) = match parts.as_slice() {
                ["admin"] => (vec!["admin", "member", "reader"], "admin-project"),
                ["admin", p] => (vec!["admin", "member", "reader"], p),
                ["member", p] => (vec!["member", "reader"], p),
                ["reader", p] => (vec!["reader"], p),
                ["role", r, p] => (vec![*r], p),
                _ => return Err(ApiError::unauthorized()),
            };
            Ok(Context {
                user_id: format!("user-{token}"),
                user_name: token.clone(),
                project_id: Some(project.to_string()),
                roles: roles.into_iter().map(str::to_string).collect(),
                ..Default::default()
            })
        })
    })
}

/// Whether the PostgreSQL variant must run (CI sets NEUTRINO_REQUIRE_PG=1).
pub fn pg_url() -> Option<String> {
    let url = std::env::var("NEUTRINO_TEST_PG_URL")
        .ok()
        .filter(|s| !s.is_empty());
    if url.is_none() && std::env::var("NEUTRINO_REQUIRE_PG").as_deref() == Ok("1") {
        panic!("NEUTRINO_REQUIRE_PG=1 but NEUTRINO_TEST_PG_URL is unset");
    }
    url
}

impl TestServer {
    /// Starts a server on SQLite with default configuration.
    pub async fn start() -> TestServer {
        Self::start_with("").await
    }

    /// Starts a server on SQLite with extra INI configuration.
    pub async fn start_with(ini: &str) -> TestServer {
        let dir = tempdir::Dir::new();
        let url = format!("sqlite://{}/neutrino.db", dir.0.display());
        Self::start_on(dir, url, None, ini).await
    }

    /// Starts a server on a fresh PostgreSQL database, or returns None when no server is
    /// configured (and NEUTRINO_REQUIRE_PG is not set).
    pub async fn start_pg(ini: &str) -> Option<TestServer> {
        let base = pg_url()?;
        let name = format!("neutrino_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Db::connect(&base)
            .await
            .expect("connect to PostgreSQL maintenance db");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(admin.reader())
            .await
            .expect("create test database");
        admin.close().await;
        let url = match base.rfind('/') {
            Some(i) if i > base.find("://").map(|x| x + 2).unwrap_or(0) => {
                format!("{}/{name}", &base[..i])
            }
            _ => format!("{base}/{name}"),
        };
        Some(Self::start_on(tempdir::Dir::new(), url, Some((base, name)), ini).await)
    }

    async fn start_on(
        dir: tempdir::Dir,
        url: String,
        pg_drop: Option<(String, String)>,
        ini: &str,
    ) -> TestServer {
        let db = Db::connect(&url).await.expect("connect store");
        db.migrate().await.expect("migrate");
        let cfg = Config::from_ini(Ini::parse(ini, "test").expect("ini")).expect("config");
        let policy = neutrino_api::policy::Policy::defaults();
        let state = ApiState::new(db.clone(), cfg, policy, fake_auth());
        let app = neutrino_api::router(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        TestServer {
            url: format!("http://{addr}"),
            db,
            state,
            client: reqwest::Client::new(),
            _dir: dir,
            pg_drop,
        }
    }

    /// Drops the PostgreSQL test database (call at the end of PostgreSQL tests).
    pub async fn cleanup(self) {
        self.db.close().await;
        if let Some((base, name)) = &self.pg_drop
            && let Ok(admin) = Db::connect(base).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(admin.reader())
                .await;
            admin.close().await;
        }
    }

    /// Sends a request as `token`; returns (status, JSON body or Null).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_h(method, path, token, body, &[]).await
    }

    /// Like [`call`] with extra headers.
    pub async fn call_h(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self
            .client
            .request(m, format!("{}{}", self.url, path))
            .header("x-auth-token", token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// GET.
    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call("GET", path, token, None).await
    }
    /// POST.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, token, Some(body)).await
    }
    /// PUT.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, token, Some(body)).await
    }
    /// DELETE.
    pub async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        self.call("DELETE", path, token, None).await
    }

    /// Creates a `resource` (`network`, `subnet`, `port`, `router`: its collection is
    /// `/v2.0/<resource>s`) as `token` and returns its document (asserts 201).
    pub async fn create(&self, resource: &str, token: &str, body: Value) -> Value {
        let (s, b) = self
            .post(
                &format!("/v2.0/{resource}s"),
                token,
                serde_json::json!({ resource: body }),
            )
            .await;
        assert_eq!(s, 201, "create {resource}: {b}");
        b[resource].clone()
    }

    /// Creates a network as `token` and returns its document (asserts 201).
    pub async fn network(&self, token: &str, body: Value) -> Value {
        self.create("network", token, body).await
    }

    /// Creates a subnet as `token` and returns its document (asserts 201).
    pub async fn subnet(&self, token: &str, body: Value) -> Value {
        self.create("subnet", token, body).await
    }

    /// Creates a port as `token` and returns its document (asserts 201).
    pub async fn port(&self, token: &str, body: Value) -> Value {
        self.create("port", token, body).await
    }

    /// Creates a router as `token` and returns its document (asserts 201).
    pub async fn router(&self, token: &str, body: Value) -> Value {
        self.create("router", token, body).await
    }

    /// Attaches `subnet` to `router` as `token` (asserts 200).
    pub async fn add_router_interface(&self, token: &str, router: &str, subnet: &str) {
        let (s, b) = self
            .put(
                &format!("/v2.0/routers/{router}/add_router_interface"),
                token,
                serde_json::json!({"subnet_id": subnet}),
            )
            .await;
        assert_eq!(s, 200, "add router interface: {b}");
    }

    /// Creates, as `token`, a network with the attributes `net` and on it an IPv4 subnet
    /// `cidr` with the extra attributes `subnet` (an object, or null for none); the ids of
    /// both.
    pub async fn network_with_subnet(
        &self,
        token: &str,
        net: Value,
        cidr: &str,
        subnet: Value,
    ) -> (String, String) {
        let net = id(&self.network(token, net).await);
        let mut body = serde_json::json!({"network_id": net, "ip_version": 4, "cidr": cidr});
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), subnet) {
            b.extend(extra);
        }
        let subnet = id(&self.subnet(token, body).await);
        (net, subnet)
    }

    /// An external network (admin's, subnet 10.30.0.0/24) and, as `token`, a network with
    /// the attributes `net` and a subnet 192.168.1.0/24 with the extra attributes `subnet`,
    /// attached to a router whose gateway is on the external network.
    pub async fn routed(&self, token: &str, net: Value, subnet: Value) -> Routed {
        let external = serde_json::json!({"router:external": true});
        let (ext, _) = self
            .network_with_subnet("admin", external, "10.30.0.0/24", Value::Null)
            .await;
        let (net, subnet) = self
            .network_with_subnet(token, net, "192.168.1.0/24", subnet)
            .await;
        let gateway = serde_json::json!({"external_gateway_info": {"network_id": ext}});
        let router = id(&self.router(token, gateway).await);
        self.add_router_interface(token, &router, &subnet).await;
        Routed {
            ext,
            net,
            subnet,
            router,
        }
    }
}

/// What [`TestServer::routed`] builds: ids of the external network, the project's network
/// and subnet, and the router between them.
pub struct Routed {
    pub ext: String,
    pub net: String,
    pub subnet: String,
    pub router: String,
}

/// Two tests of `$scenario` (an `async fn(&TestServer)`) on a server started with the INI
/// configuration `$ini`: `$sqlite` on SQLite, `$postgres` on PostgreSQL (skipped, saying so,
/// when `NEUTRINO_TEST_PG_URL` is unset).
#[macro_export]
macro_rules! on_both_stores {
    ($scenario:ident, $ini:expr, $sqlite:ident, $postgres:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            $scenario(&$crate::support::TestServer::start_with($ini).await).await;
        }

        #[tokio::test]
        async fn $postgres() {
            let Some(srv) = $crate::support::TestServer::start_pg($ini).await else {
                eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
                return;
            };
            $scenario(&srv).await;
            srv.cleanup().await;
        }
    };
}

/// The `id` of a resource document.
pub fn id(doc: &Value) -> String {
    doc["id"].as_str().expect("id").to_string()
}

/// The NeutronError type of an error body.
pub fn err_type(body: &Value) -> &str {
    body["NeutronError"]["type"].as_str().unwrap_or("")
}
