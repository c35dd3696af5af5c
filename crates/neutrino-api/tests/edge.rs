//! The HTTP edge: control characters refused before the store (SQLite and PostgreSQL),
//! keep-alive connections that survive early answers, Neutron's error body on framework
//! answers (405, 413), the body size limit, and the request id on handler log lines.
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use support::{TestServer, err_type, id};

// ---------------------------------------------------------------------------------------------
// Control characters.

async fn control_characters(srv: &TestServer) {
    let net = id(&srv.network("admin", json!({"name": "n"})).await);
    let bad = |what: &str, s: u16, b: &Value| {
        assert_eq!(s, 400, "{what}: {b}");
        assert_eq!(err_type(b), "HTTPBadRequest", "{what}: {b}");
        assert!(
            b["NeutronError"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("control characters are not allowed"),
            "{what}: {b}"
        );
    };
    // The path and the query (the issue's reproductions).
    for path in [
        "/v2.0/routers/%00",
        "/v2.0/networks/%00",
        "/v2.0/ports?device_id=%00",
        "/v2.0/networks?name=a%07b",
        "/v2.0/networks?%00=x",
    ] {
        let (s, b) = srv.get(path, "admin").await;
        bad(path, s, &b);
    }
    let (s, b) = srv
        .put(
            "/v2.0/quotas/%00",
            "admin",
            json!({"quota": {"network": 5}}),
        )
        .await;
    bad("PUT quotas/%00", s, &b);
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{net}/tags/a%00b"),
            "admin",
            json!(null),
        )
        .await;
    bad("PUT tag with NUL", s, &b);
    // Bodies: ids, names, nested values, keys.
    for (what, port) in [
        (
            "device_id",
            json!({"network_id": net, "device_id": "a\u{0}b"}),
        ),
        ("name", json!({"network_id": net, "name": "a\u{1b}[31m"})),
        ("name", json!({"network_id": net, "name": "two\nlines"})),
        ("name", json!({"network_id": net, "name": "del\u{7f}"})),
        // Nested values name their own key.
        (
            "k",
            json!({"network_id": net, "binding:profile": {"k": "a\u{0}"}}),
        ),
        (
            "subnet_id",
            json!({"network_id": net, "fixed_ips": [{"subnet_id": "\u{0}"}]}),
        ),
        (
            "attribute name",
            json!({"network_id": net, "binding:profile": {"a\u{0}": 1}}),
        ),
        (
            "description",
            json!({"network_id": net, "description": "a\u{0}b"}),
        ),
        (
            "description",
            json!({"network_id": net, "description": "\u{1b}[2J"}),
        ),
    ] {
        let (s, b) = srv
            .post("/v2.0/ports", "admin", json!({"port": port}))
            .await;
        bad(what, s, &b);
        let msg = b["NeutronError"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(&format!("for {what}.")), "{what}: {msg}");
    }
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{net}"),
            "admin",
            json!({"network": {"name": "x\u{0}"}}),
        )
        .await;
    bad("update name", s, &b);
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{net}/tags"),
            "admin",
            json!({"tags": ["ok", "a\u{0}"]}),
        )
        .await;
    bad("tags body", s, &b);
    let (s, b) = srv
        .post(
            "/v2.0/networks",
            "admin",
            json!({"networks": [{"name": "ok"}, {"name": "\u{0}"}]}),
        )
        .await;
    bad("bulk", s, &b);

    // Nothing above was stored.
    let (_, l) = srv.get("/v2.0/ports", "admin").await;
    assert_eq!(l["ports"], json!([]), "{l}");
    let (_, l) = srv.get("/v2.0/networks?name=ok", "admin").await;
    assert_eq!(l["networks"], json!([]), "{l}");

    // Free text keeps tabs and line breaks, and filters on it work.
    let text = "first line\r\nsecond\tline";
    let port = srv
        .port("admin", json!({"network_id": net, "description": text}))
        .await;
    assert_eq!(port["description"], json!(text));
    let (s, l) = srv
        .get(
            "/v2.0/ports?description=first%20line%0D%0Asecond%09line",
            "admin",
        )
        .await;
    assert_eq!(s, 200, "{l}");
    assert_eq!(l["ports"].as_array().map(Vec::len), Some(1), "{l}");
    // Other Unicode is untouched.
    let named = srv.network("admin", json!({"name": "réseau ✓ 网络"})).await;
    assert_eq!(named["name"], json!("réseau ✓ 网络"));
}

on_both_stores!(
    control_characters,
    "",
    control_characters_are_refused_sqlite,
    control_characters_are_refused_postgres
);

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 on one connection.

/// A response as read off the wire.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(300).collect();
        write!(f, "{} {:?} {body}", self.status, self.headers)
    }
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One keep-alive connection to the server.
struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(url: &str) -> Conn {
        let addr = url.trim_start_matches("http://");
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Conn { stream, reader }
    }

    /// Sends the head, then (after `pause`, so the server has the head alone first) `body`.
    fn send(&mut self, head: &str, body: &[u8], pause: Duration) -> std::io::Result<()> {
        self.stream.write_all(head.as_bytes())?;
        self.stream.flush()?;
        if !body.is_empty() {
            std::thread::sleep(pause);
            self.stream.write_all(body)?;
        }
        Ok(())
    }

    fn read(&mut self) -> std::io::Result<Raw> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ));
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(Raw {
            status,
            headers,
            body,
        })
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: &[u8],
        pause: Duration,
    ) -> std::io::Result<Raw> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nX-Auth-Token: {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.send(&head, body, pause)?;
        self.read()
    }
}

/// Runs blocking socket code off the runtime that serves the API.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test]
async fn early_answers_keep_the_connection_usable() {
    let srv = TestServer::start().await;
    let url = srv.url.clone();
    blocking(move || {
        let body = br#"{"network": {"name": "kept"}}"#;
        for (method, path, token, status) in [
            ("POST", "/v2.0/networks", "bogus-token", 401),
            ("POST", "/v2.0/no-such-collection", "admin", 404),
            ("PATCH", "/v2.0/networks", "admin", 405),
            ("DELETE", "/v2.0/networks", "admin", 405),
        ] {
            let mut conn = Conn::open(&url);
            for round in 0..3 {
                // The body arrives after the head: an answer that does not wait for it must
                // still leave the connection readable for the next request.
                let r = conn
                    .request(method, path, token, body, Duration::from_millis(50))
                    .unwrap_or_else(|e| panic!("{method} {path} round {round}: {e}"));
                assert_eq!(r.status, status, "{method} {path}: {r:?}");
                assert_ne!(r.header("connection"), Some("close"), "{r:?}");
                let next = conn
                    .request("GET", "/v2.0/networks", "admin", b"", Duration::ZERO)
                    .unwrap_or_else(|e| {
                        panic!("request after {method} {path} (round {round}) failed: {e}")
                    });
                assert_eq!(next.status, 200, "{next:?}");
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Error bodies and the body limit.

#[tokio::test]
async fn method_not_allowed_has_neutron_body_and_allow() {
    let srv = TestServer::start().await;
    let net = id(&srv.network("admin", json!({"name": "n"})).await);
    let url = srv.url.clone();
    blocking(move || {
        let mut conn = Conn::open(&url);
        for (method, path) in [
            ("PATCH", "/v2.0/networks".to_string()),
            ("DELETE", "/v2.0/ports".to_string()),
            ("POST", format!("/v2.0/networks/{net}")),
            ("PUT", "/v2.0/subnets".to_string()),
            ("POST", "/v2.0/routers/x/add_router_interface".to_string()),
            ("PUT", "/agent/v1/report".to_string()),
        ] {
            let r = conn
                .request(method, &path, "admin", b"{}", Duration::ZERO)
                .unwrap();
            assert_eq!(r.status, 405, "{method} {path}: {r:?}");
            let b = r.json();
            assert_eq!(
                err_type(&b),
                "HTTPMethodNotAllowed",
                "{method} {path}: {r:?}"
            );
            assert!(b["NeutronError"]["message"].is_string(), "{b}");
            assert_eq!(b["NeutronError"]["detail"], json!(""), "{b}");
            assert!(
                r.header("content-type")
                    .is_some_and(|c| c.starts_with("application/json")),
                "{r:?}"
            );
            assert!(r.header("allow").is_some(), "405 without Allow: {r:?}");
            assert!(r.header("x-openstack-request-id").is_some(), "{r:?}");
        }
    })
    .await;
}

fn assert_too_large(what: &str, r: &Raw) {
    assert_eq!(r.status, 413, "{what}: {r:?}");
    let b = r.json();
    assert_eq!(err_type(&b), "HTTPRequestEntityTooLarge", "{what}: {r:?}");
    assert_eq!(b["NeutronError"]["message"], json!("Request is too large."));
    assert_eq!(r.header("connection"), Some("close"), "{what}: {r:?}");
}

/// A fresh id in the form of a UUID.
fn uuid_like() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A JSON body of exactly `n` bytes (a network whose name pads it).
fn body_of(n: usize) -> Vec<u8> {
    let empty = br#"{"network": {"name": ""}}"#.len();
    format!(r#"{{"network": {{"name": "{}"}}}}"#, "x".repeat(n - empty)).into_bytes()
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_on_every_route() {
    let srv = TestServer::start().await;
    let net = id(&srv.network("admin", json!({"name": "n"})).await);
    let url = srv.url.clone();
    blocking(move || {
        // Neutron's (oslo.middleware's) default limit: 114688 bytes.
        let limit = 114_688;
        let routes = [
            ("POST", "/v2.0/networks".to_string()),
            ("PUT", format!("/v2.0/networks/{net}")),
            ("POST", "/v2.0/ports".to_string()),
            ("PUT", format!("/v2.0/networks/{net}/tags")),
            ("PUT", "/v2.0/quotas/p1".to_string()),
            ("POST", "/v2.0/nowhere".to_string()),
            ("PATCH", "/v2.0/networks".to_string()),
        ];
        for (method, path) in &routes {
            // Declared length: refused before the body is sent.
            let mut conn = Conn::open(&url);
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nX-Auth-Token: admin\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                limit + 1
            );
            conn.send(&head, b"", Duration::ZERO).unwrap();
            assert_too_large(&format!("{method} {path}"), &conn.read().unwrap());

            // Chunked: refused once the limit is crossed.
            let mut conn = Conn::open(&url);
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nX-Auth-Token: admin\r\n\
                 Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let mut chunks = Vec::new();
            let mut left = limit + 1;
            while left > 0 {
                let n = left.min(16 * 1024);
                chunks.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                chunks.extend(std::iter::repeat_n(b' ', n));
                chunks.extend_from_slice(b"\r\n");
                left -= n;
            }
            // The server may stop reading once over the limit: a failed write is fine.
            let _ = conn.send(&head, &chunks, Duration::ZERO);
            assert_too_large(&format!("chunked {method} {path}"), &conn.read().unwrap());
        }

        // The agent protocol is not Neutron's API: a DHCP agent's dhcp-ready report names
        // every port of its host, so its limit is 2 MiB.
        let mut conn = Conn::open(&url);
        let ids: Vec<String> = (0..3000).map(|_| uuid_like()).collect();
        let report = serde_json::to_vec(&json!({"host": "h1", "port_ids": ids})).unwrap();
        assert!(report.len() > limit);
        let r = conn
            .request(
                "POST",
                "/agent/v1/dhcp-ready",
                "admin",
                &report,
                Duration::ZERO,
            )
            .unwrap();
        assert_ne!(r.status, 413, "{r:?}");
        let head = format!(
            "POST /agent/v1/report HTTP/1.1\r\nHost: t\r\nX-Auth-Token: admin\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            2 * 1024 * 1024 + 1
        );
        let mut conn = Conn::open(&url);
        conn.send(&head, b"", Duration::ZERO).unwrap();
        assert_too_large("agent report over 2 MiB", &conn.read().unwrap());

        // At the limit: read and handled (here 400: the name is too long), not 413.
        let mut conn = Conn::open(&url);
        let r = conn
            .request(
                "POST",
                "/v2.0/networks",
                "admin",
                &body_of(limit),
                Duration::ZERO,
            )
            .unwrap();
        assert_eq!(r.status, 400, "{r:?}");
        assert_eq!(err_type(&r.json()), "HTTPBadRequest", "{r:?}");
        let r = conn
            .request("GET", "/v2.0/networks", "admin", b"", Duration::ZERO)
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    })
    .await;
}

#[tokio::test]
async fn body_limit_follows_max_request_body_size() {
    let srv = TestServer::start_with("[oslo_middleware]\nmax_request_body_size = 1000\n").await;
    let url = srv.url.clone();
    blocking(move || {
        let mut conn = Conn::open(&url);
        let r = conn
            .request(
                "POST",
                "/v2.0/networks",
                "admin",
                &body_of(200),
                Duration::ZERO,
            )
            .unwrap();
        assert_eq!(r.status, 201, "{r:?}");
        let r = conn
            .request(
                "POST",
                "/v2.0/networks",
                "admin",
                &body_of(1001),
                Duration::ZERO,
            )
            .unwrap();
        assert_too_large("1001 bytes", &r);
    })
    .await;
}

#[tokio::test]
async fn framework_rejections_have_neutron_bodies() {
    let srv = TestServer::start().await;
    // A path that is not UTF-8 once decoded.
    let (s, b) = srv.get("/v2.0/networks/%FF", "admin").await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_type(&b), "HTTPBadRequest", "{b}");
    // If-Match errors are neutron-lib's BadRequest (api_common.py).
    let net = id(&srv.network("admin", json!({"name": "n"})).await);
    let (s, b) = srv
        .call_h(
            "PUT",
            &format!("/v2.0/networks/{net}"),
            "admin",
            Some(json!({"network": {"name": "m"}})),
            &[("If-Match", "revision_number=x")],
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_type(&b), "BadRequest", "{b}");
    assert_eq!(
        b["NeutronError"]["message"],
        json!(
            "Bad if-match request: Revision number etag must be in the format of revision_number=<int>."
        )
    );
    // Entity tags that are not revision numbers constrain nothing, as in Neutron.
    let (s, b) = srv
        .call_h(
            "PUT",
            &format!("/v2.0/networks/{net}"),
            "admin",
            Some(json!({"network": {"name": "m"}})),
            &[("If-Match", "\"abc\"")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

// ---------------------------------------------------------------------------------------------
// Request ids on log lines.

/// Everything logged in this test process (one global subscriber, installed once).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn internal_error_log_carries_the_request_id() {
    let logs = captured_logs();
    let srv = TestServer::start().await;
    let net = id(&srv.network("admin", json!({"name": "n"})).await);
    // A stored document that no longer parses: the handler fails with an internal error.
    sqlx::query("UPDATE networks SET body = 'not json' WHERE id = $1")
        .bind(&net)
        .execute(srv.db.reader())
        .await
        .unwrap();
    let resp = reqwest::Client::new()
        .get(format!("{}/v2.0/networks/{net}", srv.url))
        .header("x-auth-token", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let rid = resp
        .headers()
        .get("x-openstack-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id header")
        .to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(err_type(&body), "HTTPInternalServerError", "{body}");
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("internal error") && l.contains(&net))
        .or_else(|| text.lines().find(|l| l.contains("internal error")))
        .unwrap_or_else(|| panic!("no internal error logged:\n{text}"));
    assert!(
        text.lines()
            .any(|l| l.contains("internal error") && l.contains(&rid)),
        "the internal error's log line lacks the request id {rid}: {line}\n{text}"
    );
}
