//! The identity API over HTTP against a temporary SQLite database.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_PW, Server, password_auth, serve, sqlite};
use neutrino_core::config::KeystoneAuthtoken;
use neutrino_identity::{RemoteKeystone, TokenValidator};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn admin_by_name() -> Value {
    json!({"name": "admin", "domain": {"name": "Default"}})
}

fn admin_project() -> Value {
    json!({"project": {"name": "admin", "domain": {"name": "Default"}}})
}

#[tokio::test]
async fn version_discovery_matches_keystone() {
    let t = sqlite().await;
    let srv = serve(t.db.clone(), 3600).await;
    let r = srv.http.get(format!("{}/", srv.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::MULTIPLE_CHOICES);
    let b: Value = r.json().await.unwrap();
    let v = &b["versions"]["values"][0];
    assert_eq!(v["id"], "v3.14");
    assert_eq!(v["status"], "stable");
    assert_eq!(v["links"][0]["rel"], "self");
    assert_eq!(v["links"][0]["href"], format!("{}/v3/", srv.url));
    for path in ["/v3", "/v3/"] {
        let r = srv
            .http
            .get(format!("{}{path}", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["version"]["id"], "v3.14");
        assert_eq!(
            b["version"]["media-types"][0]["type"],
            "application/vnd.openstack.identity-v3+json"
        );
    }
    let r = srv
        .http
        .get(format!("{}/v3/nope", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], 404);
}

#[tokio::test]
async fn password_auth_by_names_gives_a_project_token_with_catalog() {
    let t = sqlite().await;
    let srv = serve(t.db.clone(), 3600).await;
    let (s, tok, body) = srv
        .auth(&password_auth(
            admin_by_name(),
            ADMIN_PW,
            Some(admin_project()),
        ))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let tok = tok.unwrap();
    assert_eq!(tok.len(), 64);
    let t = &body["token"];
    assert_eq!(t["methods"], json!(["password"]));
    assert_eq!(t["user"]["name"], "admin");
    assert_eq!(
        t["user"]["domain"],
        json!({"id": "default", "name": "Default"})
    );
    assert!(t["user"]["password_expires_at"].is_null());
    assert_eq!(t["project"]["name"], "admin");
    assert_eq!(t["project"]["domain"]["name"], "Default");
    assert_eq!(t["is_domain"], false);
    let exp = t["expires_at"].as_str().unwrap();
    assert!(exp.ends_with('Z') && exp.len() == 27, "{exp}");
    let mut roles: Vec<&str> = t["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(roles, vec!["admin", "member", "reader"]);
    // The catalog advertises the unversioned network endpoint, public, in RegionOne.
    let net = t["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "network")
        .expect("network service in catalog");
    assert_eq!(net["name"], "neutron");
    let public = net["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["interface"] == "public")
        .unwrap();
    assert_eq!(public["url"], "http://192.0.2.1:9696");
    assert_eq!(public["region_id"], "RegionOne");
    assert_eq!(public["region"], "RegionOne");
    let identity = t["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "identity")
        .unwrap();
    assert_eq!(identity["endpoints"][0]["url"], format!("{}/v3", srv.url));

    let ctx = srv.idn.validate(&tok).await.unwrap();
    assert!(ctx.is_admin());
    assert_eq!(ctx.project_name.as_deref(), Some("admin"));
    assert_eq!(ctx.roles, vec!["admin", "member", "reader"]);

    // ?nocatalog
    let r = srv
        .http
        .post(format!("{}/v3/auth/tokens?nocatalog", srv.url))
        .json(&password_auth(
            admin_by_name(),
            ADMIN_PW,
            Some(admin_project()),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let b: Value = r.json().await.unwrap();
    assert!(b["token"].get("catalog").is_none());
    let (_, cat) = srv.get("/v3/auth/catalog", &tok).await;
    assert_eq!(cat["catalog"].as_array().unwrap().len(), 2);
    let (s, eps) = srv.get("/v3/endpoints?interface=public", &tok).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(eps["endpoints"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_credentials_and_bad_bodies_are_refused_keystone_style() {
    let t = sqlite().await;
    let srv = serve(t.db.clone(), 3600).await;
    // Re-bootstrapping neither recreates nor changes the admin password.
    assert!(!srv.idn.bootstrap("another").await.unwrap());
    let (s, _, _) = srv
        .auth(&password_auth(
            admin_by_name(),
            "another",
            Some(admin_project()),
        ))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let r = srv
        .http
        .post(format!("{}/v3/auth/tokens", srv.url))
        .json(&password_auth(admin_by_name(), "wrong", None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let www = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(www, format!("Keystone uri=\"{}\"", srv.url));
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], 401);
    assert_eq!(b["error"]["title"], "Unauthorized");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requires authentication")
    );

    let (s, _, _) = srv
        .auth(&password_auth(
            json!({"name": "nobody", "domain": {"id": "default"}}),
            "x",
            None,
        ))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A name without a domain is a 400, as Keystone answers.
    let (s, _, b) = srv
        .auth(&password_auth(json!({"name": "admin"}), ADMIN_PW, None))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["code"], 400);
    // Malformed JSON and wrong types.
    for raw in [
        "{",
        "[]",
        "{\"auth\": 1}",
        "{\"auth\":{\"identity\":{\"methods\":\"password\"}}}",
    ] {
        let r = srv
            .http
            .post(format!("{}/v3/auth/tokens", srv.url))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{raw}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["title"], "Bad Request");
    }
    // Missing/invalid X-Auth-Token.
    let r = srv
        .http
        .get(format!("{}/v3/projects", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        srv.get("/v3/projects", "bogus").await.0,
        StatusCode::UNAUTHORIZED
    );
    let admin = srv.admin_token().await;
    let (s, _) = srv
        .post("/v3/projects", &admin, json!({"project": {"name": 5}}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = srv.post("/v3/users", &admin, json!({"nouser": {}})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(srv.idn.validate("").await.unwrap_err().status.as_u16(), 401);
    assert_eq!(
        srv.idn
            .validate(&"x".repeat(5000))
            .await
            .unwrap_err()
            .status
            .as_u16(),
        401
    );
}

#[tokio::test]
async fn tempest_dynamic_credentials_flow_on_sqlite() {
    let t = sqlite().await;
    let srv = serve(t.db.clone(), 3600).await;
    common::tempest_flow(&srv).await;
}

#[tokio::test]
async fn tokens_expire() {
    let t = sqlite().await;
    let srv = serve(t.db.clone(), 1).await;
    let tok = srv.admin_token().await;
    assert!(srv.idn.validate(&tok).await.is_ok());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        srv.idn.validate(&tok).await.unwrap_err().status.as_u16(),
        401
    );
    let fresh = srv.admin_token().await;
    assert_eq!(srv.check(&fresh, &tok).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn disabled_users_and_projects_cannot_authenticate() {
    let t = sqlite().await;
    let srv = serve(t.db.clone(), 3600).await;
    let admin = srv.admin_token().await;
    let (_, p) = srv
        .post("/v3/projects", &admin, json!({"project": {"name": "demo"}}))
        .await;
    let pid = p["project"]["id"].as_str().unwrap().to_string();
    assert_eq!(p["project"]["domain_id"], "default");
    let (_, u) = srv
        .post(
            "/v3/users",
            &admin,
            json!({"user": {"name": "bob", "password": "pw"}}),
        )
        .await;
    let uid = u["user"]["id"].as_str().unwrap().to_string();
    let (_, roles) = srv.get("/v3/roles?name=member", &admin).await;
    let member = roles["roles"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        srv.put(
            &format!("/v3/projects/{pid}/users/{uid}/roles/{member}"),
            &admin
        )
        .await,
        StatusCode::NO_CONTENT
    );
    let bob = password_auth(
        json!({"name": "bob", "domain": {"id": "default"}}),
        "pw",
        Some(json!({"project": {"name": "demo", "domain": {"id": "default"}}})),
    );
    let (s, tok, _) = srv.auth(&bob).await;
    assert_eq!(s, StatusCode::CREATED);
    let tok = tok.unwrap();

    let patch = |path: String, body: Value| {
        let srv = &srv;
        let admin = admin.clone();
        async move {
            srv.call(reqwest::Method::PATCH, &path, &admin, Some(body))
                .await
        }
    };
    let (s, b) = patch(
        format!("/v3/projects/{pid}"),
        json!({"project": {"enabled": false}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["project"]["enabled"], false);
    assert_eq!(srv.auth(&bob).await.0, StatusCode::UNAUTHORIZED);
    assert!(srv.idn.validate(&tok).await.is_err());
    patch(
        format!("/v3/projects/{pid}"),
        json!({"project": {"enabled": true}}),
    )
    .await;
    let (s, tok, _) = srv.auth(&bob).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, b) = patch(
        format!("/v3/users/{uid}"),
        json!({"user": {"enabled": false}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(srv.auth(&bob).await.0, StatusCode::UNAUTHORIZED);
    assert!(srv.idn.validate(&tok.unwrap()).await.is_err());
    // Password change by the admin: the old password stops working.
    patch(
        format!("/v3/users/{uid}"),
        json!({"user": {"enabled": true, "password": "pw2"}}),
    )
    .await;
    assert_eq!(srv.auth(&bob).await.0, StatusCode::UNAUTHORIZED);
    let mut bob2 = bob.clone();
    bob2["auth"]["identity"]["password"]["user"]["password"] = json!("pw2");
    let (s, tok, _) = srv.auth(&bob2).await;
    assert_eq!(s, StatusCode::CREATED);
    // Self-service password change.
    let r = srv
        .post(
            &format!("/v3/users/{uid}/password"),
            &tok.unwrap(),
            json!({"user": {"original_password": "pw2", "password": "pw3"}}),
        )
        .await;
    assert_eq!(r.0, StatusCode::NO_CONTENT, "{}", r.1);
    bob2["auth"]["identity"]["password"]["user"]["password"] = json!("pw3");
    assert_eq!(srv.auth(&bob2).await.0, StatusCode::CREATED);
    // Domain delete requires disabling first.
    let (_, d) = srv
        .post("/v3/domains", &admin, json!({"domain": {"name": "d2"}}))
        .await;
    let did = d["domain"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        srv.delete(&format!("/v3/domains/{did}"), &admin).await,
        StatusCode::FORBIDDEN
    );
    patch(
        format!("/v3/domains/{did}"),
        json!({"domain": {"enabled": false}}),
    )
    .await;
    assert_eq!(
        srv.delete(&format!("/v3/domains/{did}"), &admin).await,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn scopes_unscoped_rescoping_domain_and_system() {
    let t = sqlite().await;
    let srv = serve(t.db.clone(), 3600).await;
    // Explicitly unscoped: no roles, no catalog.
    let (s, tok, b) = srv
        .auth(&password_auth(
            admin_by_name(),
            ADMIN_PW,
            Some(json!("unscoped")),
        ))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(b["token"].get("roles").is_none() && b["token"].get("catalog").is_none());
    let unscoped = tok.unwrap();
    let ctx = srv.idn.validate(&unscoped).await.unwrap();
    assert!(ctx.project_id.is_none() && ctx.roles.is_empty());
    // Rescope with the token method.
    let (s, tok, b) = srv
        .auth(&json!({"auth": {
            "identity": {"methods": ["token"], "token": {"id": unscoped}},
            "scope": admin_project(),
        }}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["token"]["project"]["name"], "admin");
    assert!(
        b["token"]["methods"]
            .as_array()
            .unwrap()
            .contains(&json!("token"))
    );
    assert_eq!(b["token"]["audit_ids"].as_array().unwrap().len(), 2);
    let rescoped = tok.unwrap();
    // System scope: the bootstrap admin holds admin on the system.
    let (s, tok, b) = srv
        .auth(&password_auth(
            admin_by_name(),
            ADMIN_PW,
            Some(json!({"system": {"all": true}})),
        ))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["token"]["system"], json!({"all": true}));
    let ctx = srv.idn.validate(&tok.unwrap()).await.unwrap();
    assert!(ctx.system_scope && ctx.is_admin() && ctx.project_id.is_none());
    // Domain scope needs a role on the domain.
    let dscope = Some(json!({"domain": {"name": "Default"}}));
    let (s, _, _) = srv
        .auth(&password_auth(admin_by_name(), ADMIN_PW, dscope.clone()))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let ctx = srv.idn.validate(&rescoped).await.unwrap();
    let (_, roles) = srv.get("/v3/roles?name=admin", &rescoped).await;
    let admin_role = roles["roles"][0]["id"].as_str().unwrap();
    let path = format!(
        "/v3/domains/default/users/{}/roles/{admin_role}",
        ctx.user_id
    );
    assert_eq!(srv.put(&path, &rescoped).await, StatusCode::NO_CONTENT);
    let (s, tok, b) = srv
        .auth(&password_auth(admin_by_name(), ADMIN_PW, dscope))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["token"]["domain"]["id"], "default");
    let ctx = srv.idn.validate(&tok.unwrap()).await.unwrap();
    assert_eq!(ctx.domain_id.as_deref(), Some("default"));
    let (s, sys) = srv
        .get(
            &format!("/v3/system/users/{}/roles", ctx.user_id),
            &rescoped,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(sys["roles"][0]["name"], "admin");
    let (_, auth_sys) = srv.get("/v3/auth/system", &rescoped).await;
    assert_eq!(auth_sys["system"], json!([{"all": true}]));
    let (_, auth_doms) = srv.get("/v3/auth/domains", &rescoped).await;
    assert_eq!(auth_doms["domains"][0]["id"], "default");
}

#[tokio::test]
async fn cached_validation_is_fast() {
    let t = sqlite().await;
    let srv = serve(t.db.clone(), 3600).await;
    let tok = srv.admin_token().await;
    srv.idn.validate(&tok).await.unwrap();
    let n = 2000u32;
    let start = Instant::now();
    for _ in 0..n {
        srv.idn.validate(&tok).await.unwrap();
    }
    let per = start.elapsed() / n;
    assert!(per < Duration::from_micros(200), "cache hit took {per:?}");
}

#[tokio::test]
async fn revocation_by_another_process_is_seen_within_seconds() {
    let t = sqlite().await;
    let a = serve(t.db.clone(), 3600).await;
    let b: Server = serve(t.db.clone(), 3600).await;
    let tok = a.admin_token().await;
    assert!(b.idn.validate(&tok).await.is_ok(), "shared database");
    let admin_b = b.admin_token().await;
    let r = a
        .http
        .delete(format!("{}/v3/auth/tokens", a.url))
        .header("X-Auth-Token", &tok)
        .header("X-Subject-Token", &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(a.idn.validate(&tok).await.is_err(), "same process: at once");
    tokio::time::sleep(Duration::from_millis(5200)).await;
    assert!(
        b.idn.validate(&tok).await.is_err(),
        "other process: within 5 s"
    );
    assert!(b.idn.validate(&admin_b).await.is_ok());
}

#[tokio::test]
async fn remote_keystone_validates_with_a_service_token() {
    let t = sqlite().await;
    let srv = serve(t.db.clone(), 3600).await;
    srv.idn
        .ensure_service_user("neutrino-agent", "agent-pw")
        .await
        .unwrap();
    srv.idn
        .ensure_service_user("neutrino-agent", "agent-pw")
        .await
        .unwrap();
    let cfg = |url: String, pw: &str| KeystoneAuthtoken {
        auth_url: url,
        username: "neutrino-agent".into(),
        password: pw.into(),
        project_name: "service".into(),
        user_domain_name: "Default".into(),
        project_domain_name: "Default".into(),
        www_authenticate_uri: None,
    };
    let remote = TokenValidator::Remote(RemoteKeystone::new(cfg(srv.url.clone(), "agent-pw")));
    let tok = srv.admin_token().await;
    let ctx = remote.validate(&tok).await.unwrap();
    assert_eq!(ctx.user_name, "admin");
    assert_eq!(ctx.project_name.as_deref(), Some("admin"));
    assert_eq!(ctx.roles, vec!["admin", "member", "reader"]);
    // cached
    assert_eq!(remote.validate(&tok).await.unwrap().user_id, ctx.user_id);
    assert_eq!(
        remote
            .validate("nonsense")
            .await
            .unwrap_err()
            .status
            .as_u16(),
        401
    );
    // A wrong service password or an unreachable Keystone is 503, not 401.
    let bad = RemoteKeystone::new(cfg(format!("{}/v3", srv.url), "wrong"));
    assert_eq!(bad.validate(&tok).await.unwrap_err().status.as_u16(), 503);
    let gone = RemoteKeystone::new(cfg("http://127.0.0.1:9".into(), "agent-pw"));
    assert_eq!(gone.validate(&tok).await.unwrap_err().status.as_u16(), 503);
    // The local validator agrees.
    let local = TokenValidator::Local(srv.idn.clone());
    assert_eq!(local.validate(&tok).await.unwrap().user_id, ctx.user_id);
    // ensure_service_user makes the configured password the valid one.
    srv.idn
        .ensure_service_user("neutrino-agent", "new-pw")
        .await
        .unwrap();
    let (s, _, _) = srv
        .auth(&password_auth(
            json!({"name": "neutrino-agent", "domain": {"name": "Default"}}),
            "new-pw",
            Some(json!({"project": {"name": "service", "domain": {"name": "Default"}}})),
        ))
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

/// Answers that need no body (a 401 from a bad token, a 404) must leave a keep-alive
/// connection usable: the body that follows the head is read, not left on the wire for hyper
/// to give up on. Bodies over oslo.middleware's 114688 bytes are 413.
#[tokio::test]
async fn early_answers_keep_the_connection_and_big_bodies_are_413() {
    use std::io::{BufRead, BufReader, Read, Write};
    let t = sqlite().await;
    let srv = serve(t.db.clone(), 3600).await;
    let admin = srv.admin_token().await;
    let addr = srv.url.trim_start_matches("http://").to_string();
    tokio::task::spawn_blocking(move || {
        let stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        let mut exchange = |head: String, body: &[u8]| -> std::io::Result<(u16, String)> {
            w.write_all(head.as_bytes())?;
            w.flush()?;
            if !body.is_empty() {
                std::thread::sleep(Duration::from_millis(50));
                w.write_all(body)?;
            }
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let status = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            let mut len = 0;
            let mut headers = String::new();
            loop {
                line.clear();
                r.read_line(&mut line)?;
                if line.trim().is_empty() {
                    break;
                }
                headers.push_str(&line.to_ascii_lowercase());
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut b = vec![0; len];
            r.read_exact(&mut b)?;
            // The headers, lower-cased, then the body.
            headers.push_str(&String::from_utf8_lossy(&b));
            Ok((status, headers))
        };
        let body = br#"{"project": {"name": "kept"}}"#;
        let req = |method: &str, path: &str, token: &str, len: usize| {
            format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
            )
        };
        for round in 0..3 {
            let (s, _) = exchange(req("POST", "/v3/projects", "bogus", body.len()), body).unwrap();
            assert_eq!(s, 401);
            let (s, _) = exchange(req("POST", "/v3/nowhere", &admin, body.len()), body).unwrap();
            assert_eq!(s, 404);
            let (s, _) = exchange(req("GET", "/v3/projects", &admin, 0), b"")
                .unwrap_or_else(|e| panic!("request after early answers (round {round}): {e}"));
            assert_eq!(s, 200);
        }
        // Wrong verbs: Keystone's error body, with Allow.
        let (s, headers) =
            exchange(req("PATCH", "/v3/auth/tokens", &admin, body.len()), body).unwrap();
        assert_eq!(s, 405);
        assert!(headers.contains("allow:"), "{headers}");
        assert!(
            headers.contains("content-type: application/json"),
            "{headers}"
        );
        let (s, headers) = exchange(req("POST", "/v3/projects", &admin, 114_689), b"").unwrap();
        assert_eq!(s, 413);
        assert!(headers.contains("connection: close"), "{headers}");
    })
    .await
    .unwrap();
}
