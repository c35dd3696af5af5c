//! Shared test harness: a migrated database, an identity server on a loopback port, and
//! small HTTP helpers. Also the end-to-end scenario run against SQLite and PostgreSQL.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use neutrino_core::Db;
use neutrino_identity::{Identity, IdentityConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const ADMIN_PW: &str = "s3cret-admin";

/// A temporary SQLite database, removed on drop.
pub struct TempDb {
    pub db: Db,
    dir: PathBuf,
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn sqlite() -> TempDb {
    let dir = std::env::temp_dir().join(format!("neutrino-identity-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = Db::connect(&format!("sqlite://{}/x.db", dir.display()))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    TempDb { db, dir }
}

/// A running identity server.
pub struct Server {
    pub url: String,
    pub idn: Identity,
    pub http: reqwest::Client,
}

/// Serves `db` on a loopback port with `expiry` seconds tokens; bootstraps the admin.
pub async fn serve(db: Db, expiry: i64) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let idn = Identity::new(
        db,
        IdentityConfig {
            token_expiration_secs: expiry,
            identity_url: url.clone(),
            network_url: "http://192.0.2.1:9696/".into(),
            region: "RegionOne".into(),
        },
    );
    idn.bootstrap(ADMIN_PW).await.unwrap();
    let router = idn.router();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Server {
        url,
        idn,
        http: reqwest::Client::new(),
    }
}

pub fn password_auth(user: Value, password: &str, scope: Option<Value>) -> Value {
    let mut user = user;
    user["password"] = json!(password);
    let mut auth = json!({"identity": {"methods": ["password"], "password": {"user": user}}});
    if let Some(s) = scope {
        auth["scope"] = s;
    }
    json!({ "auth": auth })
}

impl Server {
    /// POST /v3/auth/tokens; returns (status, token header, body).
    pub async fn auth(&self, body: &Value) -> (StatusCode, Option<String>, Value) {
        let r = self
            .http
            .post(format!("{}/v3/auth/tokens", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let tok = r
            .headers()
            .get("x-subject-token")
            .map(|v| v.to_str().unwrap().to_string());
        let body = r.json().await.unwrap_or(Value::Null);
        (status, tok, body)
    }

    /// An admin token scoped to project admin (the way OSC and Tempest ask for it).
    pub async fn admin_token(&self) -> String {
        let (s, tok, _) = self
            .auth(&password_auth(
                json!({"name": "admin", "domain": {"name": "Default"}}),
                ADMIN_PW,
                Some(json!({"project": {"name": "admin", "domain": {"name": "Default"}}})),
            ))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        tok.unwrap()
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("X-Auth-Token", token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: &str) -> StatusCode {
        self.call(reqwest::Method::PUT, path, token, None).await.0
    }

    pub async fn delete(&self, path: &str, token: &str) -> StatusCode {
        self.call(reqwest::Method::DELETE, path, token, None)
            .await
            .0
    }

    /// GET /v3/auth/tokens for `subject` with `caller`.
    pub async fn check(&self, caller: &str, subject: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}/v3/auth/tokens", self.url))
            .header("X-Auth-Token", caller)
            .header("X-Subject-Token", subject)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

/// Tempest's dynamic-credentials traffic, end to end, plus the checks a network API relies
/// on. Run against every database engine.
pub async fn tempest_flow(srv: &Server) {
    let admin = srv.admin_token().await;
    control_characters_are_refused(srv, &admin).await;
    // Tempest: find the credentials domain by name.
    let (s, doms) = srv.get("/v3/domains?name=Default", &admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doms["domains"].as_array().unwrap().len(), 1);
    let dom = doms["domains"][0]["id"].as_str().unwrap().to_string();
    assert!(doms["links"]["next"].is_null());
    // project + user
    let (s, p) = srv
        .post(
            "/v3/projects",
            &admin,
            json!({"project": {"name": "tempest-Net-1", "description": "d", "domain_id": dom}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let pid = p["project"]["id"].as_str().unwrap().to_string();
    assert_eq!(p["project"]["parent_id"], dom.as_str());
    assert_eq!(p["project"]["is_domain"], false);
    let (s, dup) = srv
        .post(
            "/v3/projects",
            &admin,
            json!({"project": {"name": "tempest-Net-1", "domain_id": dom}}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{dup}");
    let (s, u) = srv
        .post(
            "/v3/users",
            &admin,
            json!({"user": {"name": "tempest-Net-1-member", "password": "pw1", "domain_id": dom, "email": "m@example.org"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    assert!(u["user"].get("password").is_none());
    assert_eq!(u["user"]["email"], "m@example.org");
    let uid = u["user"]["id"].as_str().unwrap().to_string();

    // No role yet: scoped authentication is refused.
    let member_auth = password_auth(
        json!({"id": uid, "name": "tempest-Net-1-member", "domain": {"id": dom}}),
        "pw1",
        Some(json!({"project": {"id": pid, "domain": {"id": dom}}})),
    );
    let (s, _, body) = srv.auth(&member_auth).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], 401);

    let (s, roles) = srv.get("/v3/roles", &admin).await;
    assert_eq!(s, StatusCode::OK);
    let role = |n: &str| {
        roles["roles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (member, reader) = (role("member"), role("reader"));
    let grant = format!("/v3/projects/{pid}/users/{uid}/roles/{member}");
    assert_eq!(srv.put(&grant, &admin).await, StatusCode::NO_CONTENT);
    assert_eq!(
        srv.put(&grant, &admin).await,
        StatusCode::NO_CONTENT,
        "idempotent"
    );
    assert_eq!(
        srv.call(reqwest::Method::HEAD, &grant, &admin, None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );

    let (s, tok, body) = srv.auth(&member_auth).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let user_tok = tok.unwrap();
    let t = &body["token"];
    assert_eq!(t["project"]["id"], pid.as_str());
    assert_eq!(t["project"]["domain"]["id"], dom.as_str());
    let names: Vec<&str> = t["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"member") && names.contains(&"reader"),
        "{names:?}"
    );
    assert!(!names.contains(&"admin"));
    let ctx = srv.idn.validate(&user_tok).await.unwrap();
    assert_eq!(ctx.user_id, uid);
    assert_eq!(ctx.user_name, "tempest-Net-1-member");
    assert_eq!(ctx.project_id.as_deref(), Some(pid.as_str()));
    assert_eq!(ctx.project_name.as_deref(), Some("tempest-Net-1"));
    assert_eq!(ctx.roles, vec!["member", "reader"]);
    assert!(!ctx.is_admin() && !ctx.system_scope);
    assert_eq!(ctx.token_id.len(), 8);

    // Non-admin: forbidden to administer, may read its own project and user.
    let (s, body) = srv
        .post("/v3/projects", &user_tok, json!({"project": {"name": "x"}}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], 403);
    assert_eq!(body["error"]["title"], "Forbidden");
    assert_eq!(
        srv.get(&format!("/v3/projects/{pid}"), &user_tok).await.0,
        StatusCode::OK
    );
    assert_eq!(
        srv.get(&format!("/v3/users/{uid}"), &user_tok).await.0,
        StatusCode::OK
    );
    assert_eq!(
        srv.get("/v3/users", &user_tok).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, mine) = srv.get("/v3/auth/projects", &user_tok).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(mine["projects"][0]["id"], pid.as_str());

    // Role assignment listing with names (OSC `role assignment list --names`).
    let (s, ra) = srv
        .get(
            &format!(
                "/v3/role_assignments?user.id={uid}&scope.project.id={pid}&include_names=True"
            ),
            &admin,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let items = ra["role_assignments"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{ra}");
    assert_eq!(items[0]["role"]["name"], "member");
    assert_eq!(items[0]["user"]["name"], "tempest-Net-1-member");
    assert_eq!(items[0]["scope"]["project"]["name"], "tempest-Net-1");
    let (_, eff) = srv
        .get(
            &format!("/v3/role_assignments?user.id={uid}&effective=true"),
            &admin,
        )
        .await;
    let eff_roles: Vec<&str> = eff["role_assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["role"]["id"].as_str().unwrap())
        .collect();
    assert!(eff_roles.contains(&reader.as_str()), "{eff}");

    // Removing the role invalidates the user's token.
    assert_eq!(srv.delete(&grant, &admin).await, StatusCode::NO_CONTENT);
    assert_eq!(srv.delete(&grant, &admin).await, StatusCode::NOT_FOUND);
    assert_eq!(
        srv.idn
            .validate(&user_tok)
            .await
            .unwrap_err()
            .status
            .as_u16(),
        401
    );

    // Cleanup as Tempest does.
    assert_eq!(
        srv.delete(&format!("/v3/users/{uid}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        srv.delete(&format!("/v3/users/{uid}"), &admin).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        srv.delete(&format!("/v3/projects/{pid}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        srv.get(&format!("/v3/projects/{pid}"), &admin).await.0,
        StatusCode::NOT_FOUND
    );

    // Validate and revoke through the API.
    let other = srv.admin_token().await;
    let (s, body) = srv.check(&admin, &other).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["token"]["project"]["name"], "admin");
    assert_eq!(srv.idn.validate(&other).await.unwrap().user_name, "admin");
    let r = srv
        .http
        .delete(format!("{}/v3/auth/tokens", srv.url))
        .header("X-Auth-Token", &admin)
        .header("X-Subject-Token", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(srv.check(&admin, &other).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        srv.idn.validate(&other).await.unwrap_err().status.as_u16(),
        401
    );
    assert_eq!(
        srv.get("/v3/projects", &other).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// NUL and control characters never reach the store (PostgreSQL answered 500 to any NUL in
/// a bound parameter): 400, Keystone style, in the path, the query and bodies.
pub async fn control_characters_are_refused(srv: &Server, admin: &str) {
    let bad = |what: &str, s: StatusCode, b: &Value| {
        assert_eq!(s, StatusCode::BAD_REQUEST, "{what}: {b}");
        assert_eq!(b["error"]["code"], 400, "{what}: {b}");
    };
    for path in [
        "/v3/users/%00",
        "/v3/projects/a%07b",
        "/v3/projects?name=%00",
        "/v3/users?%00=x",
    ] {
        let (s, b) = srv.get(path, admin).await;
        bad(path, s, &b);
    }
    let (s, _, b) = srv
        .auth(&password_auth(
            json!({"name": "ad\u{0}min", "domain": {"name": "Default"}}),
            ADMIN_PW,
            None,
        ))
        .await;
    bad("user name in auth", s, &b);
    let (s, b) = srv
        .post(
            "/v3/projects",
            admin,
            json!({"project": {"name": "p\u{0}"}}),
        )
        .await;
    bad("project name", s, &b);
    let (s, b) = srv
        .post(
            "/v3/users",
            admin,
            json!({"user": {"name": "u", "description": "\u{1b}[2J"}}),
        )
        .await;
    bad("user description", s, &b);
    let (s, b) = srv.get("/v3/projects?name=p", admin).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["projects"], json!([]), "nothing was stored: {b}");
}
