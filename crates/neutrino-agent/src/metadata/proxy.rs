//! The metadata proxy: an HTTP server on the agent's unix socket (`metadata_proxy_socket`)
//! that haproxy forwards instances' requests to.
//!
//! For each request: the router or network haproxy stamped (`X-Neutron-Router-ID` /
//! `X-Neutron-Network-ID`, exactly one) and the instance's address (`X-Forwarded-For`, the
//! last one: haproxy's) name the instance, resolved by the server's agent API
//! (`GET /agent/v1/metadata/instance`, cached a few seconds). The request then goes to the
//! metadata service with `X-Instance-ID`, `X-Tenant-ID`, `X-Instance-ID-Signature` (lowercase
//! hex HMAC-SHA256 of the instance id with the shared secret) and `X-Forwarded-For`, and
//! the service's status and body come back. A request it cannot attribute is 404; a failure
//! is 500 (503 when the service cannot be reached) with a log line — never a panic.
//!
//! Never decides what an instance may see (the metadata service does) and never touches the
//! host beyond its own socket file.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use neutrino_host::fs;
use sha2::Sha256;

use super::haproxy::Via;
use super::{NETWORK_ID_HEADER, ROUTER_ID_HEADER};
use crate::client::{ApiClient, ClientError, segment};

/// How long a resolved instance is reused.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Largest request body forwarded (Nova's password POST is tiny).
const MAX_BODY: usize = 1 << 20;
/// Timeout of a request to the metadata service.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// The instance behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Its id (the port's `device_id`).
    pub instance_id: String,
    /// Its project.
    pub project_id: String,
}

/// A boxed future (the resolver is a trait object).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where instances and the metadata service are found: the server, or a fake in tests.
pub trait Resolver: Send + Sync {
    /// The instance with fixed IP `ip` behind `via`; `None` when there is none.
    fn instance<'a>(
        &'a self,
        ip: IpAddr,
        via: &'a Via,
    ) -> BoxFut<'a, Result<Option<Instance>, String>>;
    /// The URL of neutrino's own metadata service (an instance's path is appended).
    fn service_url(&self) -> BoxFut<'_, Result<String, String>>;
}

/// [`Resolver`] of the neutrino server, through the agent's client.
pub struct ServerResolver(pub Arc<ApiClient>);

impl Resolver for ServerResolver {
    fn instance<'a>(
        &'a self,
        ip: IpAddr,
        via: &'a Via,
    ) -> BoxFut<'a, Result<Option<Instance>, String>> {
        Box::pin(async move {
            let (k, id) = match via {
                Via::Router(id) => ("router_id", id),
                Via::Network(id) => ("network_id", id),
            };
            let path = format!(
                "{}/metadata/instance?ip={}&{k}={}",
                neutrino_wire::PREFIX,
                segment(&ip.to_string()),
                segment(id)
            );
            match self.0.get(&path).await {
                Ok(v) => {
                    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
                    let inst = Instance {
                        instance_id: s("instance_id"),
                        project_id: s("project_id"),
                    };
                    if inst.instance_id.is_empty() {
                        return Err(format!("{path}: answer without instance_id"));
                    }
                    Ok(Some(inst))
                }
                Err(e) if e.status() == Some(404) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn service_url(&self) -> BoxFut<'_, Result<String, String>> {
        Box::pin(async move {
            self.0
                .network_url()
                .await
                .map(|u| format!("{}/metadata", u.trim_end_matches('/')))
                .map_err(|e: ClientError| e.to_string())
        })
    }
}

/// The proxy's state.
pub struct Proxy {
    resolver: Arc<dyn Resolver>,
    secret: String,
    /// Nova's metadata API root, when configured.
    nova: Option<String>,
    http: reqwest::Client,
    cache: Mutex<HashMap<(IpAddr, Via), (Instance, Instant)>>,
}

/// `X-Instance-ID-Signature`: lowercase hex HMAC-SHA256 of the instance id.
pub fn sign(secret: &str, instance_id: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; this cannot happen.
        return String::new();
    };
    mac.update(instance_id.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        format!("{body}\n"),
    )
        .into_response()
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "404 Not Found")
}

fn one_header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Who sent the request: haproxy's stamp and the client address it appended.
fn attribute(h: &HeaderMap) -> Option<(IpAddr, Via)> {
    let via = match (
        one_header(h, ROUTER_ID_HEADER),
        one_header(h, NETWORK_ID_HEADER),
    ) {
        (Some(r), None) => Via::Router(r.to_string()),
        (None, Some(n)) => Via::Network(n.to_string()),
        // Both (one is forged) or neither: not ours to answer.
        _ => return None,
    };
    let last = h
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())?;
    let ip: IpAddr = last.parse().ok()?;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    Some((ip, via))
}

impl Proxy {
    /// A proxy forwarding to Nova's `nova_url` when given, else to neutrino's own service.
    pub fn new(resolver: Arc<dyn Resolver>, secret: String, nova: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Proxy {
            resolver,
            secret,
            nova,
            http,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn resolve(
        &self,
        ip: IpAddr,
        via: &Via,
        fresh: bool,
    ) -> Result<Option<(Instance, bool)>, String> {
        let key = (ip, via.clone());
        if !fresh {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((inst, at)) = cache.get(&key)
                && at.elapsed() < CACHE_TTL
            {
                return Ok(Some((inst.clone(), true)));
            }
        }
        let found = self.resolver.instance(ip, via).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        match &found {
            Some(inst) => {
                cache.insert(key, (inst.clone(), Instant::now()));
            }
            None => {
                cache.remove(&key);
            }
        }
        Ok(found.map(|i| (i, false)))
    }

    async fn forward(
        &self,
        inst: &Instance,
        ip: IpAddr,
        method: &axum::http::Method,
        path: &str,
        content_type: Option<&HeaderValue>,
        body: &axum::body::Bytes,
    ) -> Result<Response, String> {
        let base = match &self.nova {
            Some(u) => u.clone(),
            None => self.resolver.service_url().await?,
        };
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let mut req = self
            .http
            .request(method.clone(), &url)
            .timeout(UPSTREAM_TIMEOUT)
            .header("X-Forwarded-For", ip.to_string())
            .header("X-Instance-ID", &inst.instance_id)
            .header("X-Tenant-ID", &inst.project_id)
            .header(
                "X-Instance-ID-Signature",
                sign(&self.secret, &inst.instance_id),
            )
            .body(body.clone());
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct.clone());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%url, error = %e, "metadata service unreachable");
                return Ok(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The remote metadata server is temporarily unavailable. Please try again later.",
                ));
            }
        };
        let status = resp.status();
        let ct = resp.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        let code = status.as_u16();
        if status.is_success() || matches!(code, 400 | 404 | 409 | 502 | 503 | 504) {
            let mut out = Response::builder().status(status);
            if let Some(ct) = ct {
                out = out.header(header::CONTENT_TYPE, ct);
            }
            return out.body(Body::from(bytes)).map_err(|e| e.to_string());
        }
        match code {
            403 => {
                tracing::warn!(
                    instance_id = %inst.instance_id,
                    "the metadata service answered 403 Forbidden: do the shared secrets \
                     (metadata_proxy_shared_secret) of the agent and the service match?"
                );
                Ok(text(StatusCode::FORBIDDEN, "403 Forbidden"))
            }
            500 => {
                tracing::warn!(%url, "the metadata service had an internal error");
                Ok(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Remote metadata server experienced an internal server error.",
                ))
            }
            _ => Err(format!("{url}: unexpected response code {code}")),
        }
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request) -> Response {
        match self.serve(req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "metadata request failed");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "An unknown error has occurred. Please try your request again.",
                )
            }
        }
    }

    async fn serve(&self, req: Request) -> Result<Response, String> {
        let Some((ip, via)) = attribute(req.headers()) else {
            tracing::debug!(headers = ?req.headers(), "metadata request without a router/network and address");
            return Ok(not_found());
        };
        let method = req.method().clone();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|e| format!("reading the request body: {e}"))?;
        let Some((inst, cached)) = self.resolve(ip, &via, false).await? else {
            tracing::warn!(%ip, ?via, "no instance with this address: metadata request refused");
            return Ok(not_found());
        };
        let resp = self
            .forward(&inst, ip, &method, &path, content_type.as_ref(), &body)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND && cached {
            // The address may have moved to another instance since it was cached.
            if let Some((again, _)) = self.resolve(ip, &via, true).await?
                && again != inst
            {
                return self
                    .forward(&again, ip, &method, &path, content_type.as_ref(), &body)
                    .await;
            }
        }
        tracing::debug!(%ip, instance_id = %inst.instance_id, %path, status = resp.status().as_u16(), "metadata request");
        Ok(resp)
    }
}

/// The proxy's HTTP routes.
pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .fallback(|State(p): State<Arc<Proxy>>, req: Request| async move { p.handle(req).await })
        .with_state(proxy)
}

/// Serves the proxy on the unix socket `path` (a stale socket file is replaced) until the
/// task is dropped.
pub async fn serve(path: &Path, proxy: Arc<Proxy>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(std::io::Error::other)?;
    }
    fs::remove_file(path).map_err(std::io::Error::other)?;
    let listener = tokio::net::UnixListener::bind(path)?;
    tracing::info!(socket = %path.display(), "metadata proxy listening");
    axum::serve(listener, router(proxy)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    struct FakeResolver {
        url: String,
        calls: Mutex<usize>,
    }

    impl Resolver for FakeResolver {
        fn instance<'a>(
            &'a self,
            ip: IpAddr,
            via: &'a Via,
        ) -> BoxFut<'a, Result<Option<Instance>, String>> {
            Box::pin(async move {
                *self.calls.lock().unwrap() += 1;
                Ok(match (ip.to_string().as_str(), via) {
                    ("10.0.0.5", Via::Router(r)) if r == "r1" => Some(Instance {
                        instance_id: "vm-5".into(),
                        project_id: "p1".into(),
                    }),
                    ("10.0.0.6", Via::Network(n)) if n == "n1" => Some(Instance {
                        instance_id: "vm-6".into(),
                        project_id: "p1".into(),
                    }),
                    ("10.0.0.66", _) => return Err("server down".into()),
                    _ => None,
                })
            })
        }
        fn service_url(&self) -> BoxFut<'_, Result<String, String>> {
            Box::pin(async move { Ok(self.url.clone()) })
        }
    }

    /// A metadata service that echoes the identity headers, and refuses bad signatures.
    async fn upstream() -> String {
        let app = Router::new().fallback(|req: Request| async move {
            let h = req.headers();
            let get = |k: &str| {
                h.get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let id = get("x-instance-id");
            if get("x-instance-id-signature") != sign("s3cret", &id) {
                return (StatusCode::FORBIDDEN, "bad signature".to_string()).into_response();
            }
            if req.uri().path().ends_with("/missing") || id.starts_with("gone-") {
                return (StatusCode::NOT_FOUND, "no such thing").into_response();
            }
            (
                [(header::CONTENT_TYPE, "application/json")],
                format!(
                    "{} {} {} {}",
                    req.uri(),
                    id,
                    get("x-tenant-id"),
                    get("x-forwarded-for")
                ),
            )
                .into_response()
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metadata", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    }

    async fn request(sock: &Path, headers: &[(&str, &str)], path: &str) -> (u16, String) {
        let mut s = tokio::net::UnixStream::connect(sock).await.unwrap();
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_string();
        (status, body)
    }

    /// Proxies serving on sockets in a directory of their own; on drop their tasks end and
    /// the directory goes.
    struct Sockets {
        dir: std::path::PathBuf,
        tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    }

    impl Sockets {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("neutrino-{name}-{}", std::process::id()));
            Sockets { dir, tasks: vec![] }
        }

        /// Serves `proxy` on the socket `name`; returns its path once it is there (or after a
        /// second).
        async fn serve(&mut self, name: &str, proxy: Proxy) -> std::path::PathBuf {
            let sock = self.dir.join(name);
            self.tasks.push(tokio::spawn({
                let sock = sock.clone();
                async move { serve(&sock, Arc::new(proxy)).await }
            }));
            for _ in 0..100 {
                if sock.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sock
        }
    }

    impl Drop for Sockets {
        fn drop(&mut self) {
            for t in &self.tasks {
                t.abort();
            }
            let _ = fs::remove_dir(&self.dir);
        }
    }

    /// A resolver whose one instance (for any address) can be changed.
    struct Switch {
        url: String,
        id: Mutex<String>,
    }

    impl Resolver for Switch {
        fn instance<'a>(
            &'a self,
            _ip: IpAddr,
            _via: &'a Via,
        ) -> BoxFut<'a, Result<Option<Instance>, String>> {
            Box::pin(async move {
                Ok(Some(Instance {
                    instance_id: self.id.lock().unwrap().clone(),
                    project_id: "p1".into(),
                }))
            })
        }
        fn service_url(&self) -> BoxFut<'_, Result<String, String>> {
            Box::pin(async move { Ok(self.url.clone()) })
        }
    }

    #[tokio::test]
    async fn a_cached_instance_the_service_no_longer_knows_is_looked_up_again() {
        let resolver = Arc::new(Switch {
            url: upstream().await,
            id: Mutex::new("gone-1".into()),
        });
        let mut socks = Sockets::new("mdproxy2");
        let proxy = Proxy::new(resolver.clone(), "s3cret".into(), None);
        let sock = socks.serve("metadata_proxy", proxy).await;
        let h = [
            ("X-Neutron-Network-ID", "n1"),
            ("X-Forwarded-For", "10.0.0.5"),
        ];
        // Freshly resolved and unknown to the service: its 404 as is.
        let (s, _) = request(&sock, &h, "/").await;
        assert_eq!(s, 404);
        // The address now belongs to another instance; the cache still says gone-1.
        *resolver.id.lock().unwrap() = "vm-new".into();
        let (s, b) = request(&sock, &h, "/").await;
        assert_eq!((s, b.as_str()), (200, "/metadata/ vm-new p1 10.0.0.5"));
    }

    #[tokio::test]
    async fn signs_forwards_and_refuses_what_it_cannot_attribute() {
        assert_eq!(
            sign("secret", "i-1"),
            "d0eb6bf7ee2f44ba139cba554da58398da170e9d2f8f3621162c9a07fc576524"
        );
        let url = upstream().await;
        let resolver = Arc::new(FakeResolver {
            url: url.clone(),
            calls: Mutex::new(0),
        });
        let mut socks = Sockets::new("mdproxy");
        let proxy = Proxy::new(resolver.clone(), "s3cret".into(), None);
        let sock = socks.serve("metadata_proxy", proxy).await;
        let r1 = [
            ("X-Neutron-Router-ID", "r1"),
            ("X-Forwarded-For", "10.0.0.5"),
        ];
        let (s, b) = request(&sock, &r1, "/openstack/latest/meta_data.json?x=1").await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            b,
            "/metadata/openstack/latest/meta_data.json?x=1 vm-5 p1 10.0.0.5"
        );
        // Cached: the second request does not ask the server again.
        let (s, _) = request(&sock, &r1, "/latest/meta-data/local-ipv4").await;
        assert_eq!(s, 200);
        assert_eq!(*resolver.calls.lock().unwrap(), 1);
        // Through a network; haproxy's address is the last one.
        let (s, b) = request(
            &sock,
            &[
                ("X-Neutron-Network-ID", "n1"),
                ("X-Forwarded-For", "10.0.0.5, 10.0.0.6"),
            ],
            "/",
        )
        .await;
        assert_eq!((s, b.as_str()), (200, "/metadata/ vm-6 p1 10.0.0.6"));
        // The service's errors come back as they are.
        let (s, _) = request(&sock, &r1, "/missing").await;
        assert_eq!(s, 404);
        // Not attributable: no stamp, both stamps, no address, unknown address.
        for h in [
            vec![("X-Forwarded-For", "10.0.0.5")],
            vec![
                ("X-Neutron-Router-ID", "r1"),
                ("X-Neutron-Network-ID", "n1"),
                ("X-Forwarded-For", "10.0.0.5"),
            ],
            vec![("X-Neutron-Router-ID", "r1")],
            vec![("X-Neutron-Router-ID", "r1"), ("X-Forwarded-For", "nope")],
            vec![
                ("X-Neutron-Router-ID", "r1"),
                ("X-Forwarded-For", "10.0.0.9"),
            ],
        ] {
            let (s, b) = request(&sock, &h, "/").await;
            assert_eq!(s, 404, "{h:?}: {b}");
        }
        // The server cannot be asked: 500, and the proxy keeps serving.
        let (s, _) = request(
            &sock,
            &[
                ("X-Neutron-Router-ID", "r1"),
                ("X-Forwarded-For", "10.0.0.66"),
            ],
            "/",
        )
        .await;
        assert_eq!(s, 500);
        // A wrong secret: the service's 403 comes back.
        let bad = Proxy::new(resolver.clone(), "wrong".into(), None);
        let sock2 = socks.serve("other", bad).await;
        let (s, _) = request(&sock2, &r1, "/").await;
        assert_eq!(s, 403);
        // nova_metadata_host: the same signed request, at Nova's own paths (no /metadata).
        let nova_base = url
            .trim_end_matches('/')
            .trim_end_matches("/metadata")
            .to_string();
        let to_nova = Proxy::new(resolver.clone(), "s3cret".into(), Some(nova_base));
        let sock4 = socks.serve("nova-ok", to_nova).await;
        let (s, b) = request(&sock4, &r1, "/openstack/latest/meta_data.json").await;
        assert_eq!(
            (s, b.as_str()),
            (200, "/openstack/latest/meta_data.json vm-5 p1 10.0.0.5")
        );
        // Nova unreachable: 503.
        let nova = Proxy::new(resolver, "s3cret".into(), Some("http://127.0.0.1:9".into()));
        let sock3 = socks.serve("nova", nova).await;
        let (s, _) = request(&sock3, &r1, "/").await;
        assert_eq!(s, 503);
    }
}
