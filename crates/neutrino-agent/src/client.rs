//! HTTP client for the identity API, the network API and the agent sync protocol.
//!
//! Owns authentication (a Keystone v3 password token, renewed on 401 and before it expires),
//! finding the network endpoint in the token's catalog, and the `/agent/v1` calls
//! (`docs/agent-protocol.md`). Used by the agent with its service credentials and by
//! `neutrino probe` with the user's cloud. Never retries by itself beyond one re-login: the
//! callers decide about backoff.

use std::time::{Duration, Instant};

use neutrino_wire::{
    AgentReport, ChangeBatch, DhcpReadyReport, HostState, PREFIX, PortStatus, PortStatusReport,
    ReportReply,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A call to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request could not be sent or its answer read.
    #[error("{method} {url}: {source}")]
    Http {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Status code.
        status: u16,
        /// Answer body (shortened).
        body: String,
    },
    /// `410 ChangeLogGone`: resync from a full state.
    #[error("change log cursor is gone (410): full resync needed")]
    Gone,
    /// The answer is not what the protocol says.
    #[error("{url}: unexpected answer: {reason}")]
    Decode {
        /// URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The token's catalog has no network endpoint and none was configured.
    #[error("no network endpoint in the catalog (interface {interface}, region {region:?})")]
    NoEndpoint {
        /// Interface looked for.
        interface: String,
        /// Region looked for.
        region: Option<String>,
    },
}

impl ClientError {
    /// The HTTP status, for errors the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            ClientError::Gone => Some(410),
            _ => None,
        }
    }
}

/// Password credentials (Keystone v3), as in clouds.yaml or the agent's `[neutrino]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Identity URL (with or without `/v3`).
    pub auth_url: String,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Project to scope to.
    pub project_name: String,
    /// User's domain name.
    pub user_domain_name: String,
    /// Project's domain name.
    pub project_domain_name: String,
    /// Region of the endpoint to use.
    pub region: Option<String>,
    /// Endpoint interface (`public`).
    pub interface: String,
}

struct Session {
    token: String,
    network_url: String,
    at: Instant,
}

/// A client of one cloud, with one token at a time.
pub struct ApiClient {
    http: reqwest::Client,
    creds: Credentials,
    network_url: Option<String>,
    session: tokio::sync::Mutex<Option<Session>>,
}

/// Tokens are renewed after this long (Keystone's default lifetime is an hour).
const TOKEN_REUSE: Duration = Duration::from_secs(1800);

fn trim_url(u: &str) -> String {
    u.trim_end_matches('/').to_string()
}

/// Percent-encodes a path segment (host names, ids).
pub fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ApiClient {
    /// A client; `network_url` overrides the catalog's network endpoint.
    pub fn new(creds: Credentials, network_url: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| ClientError::Http {
                method: "CLIENT".into(),
                url: creds.auth_url.clone(),
                source,
            })?;
        Ok(ApiClient {
            http,
            creds,
            network_url: network_url.map(|u| trim_url(&u)),
            session: tokio::sync::Mutex::new(None),
        })
    }

    async fn login(&self) -> Result<Session, ClientError> {
        let base = trim_url(&self.creds.auth_url);
        let base = base.strip_suffix("/v3").unwrap_or(&base);
        let url = format!("{base}/v3/auth/tokens");
        let c = &self.creds;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"name": c.user_domain_name}, "password": c.password}}},
            "scope": {"project": {"name": c.project_name, "domain": {"name": c.project_domain_name}}}}});
        let http_err = |source| ClientError::Http {
            method: "POST".into(),
            url: url.clone(),
            source,
        };
        let resp = self
            .http
            .post(&url)
            .timeout(Duration::from_secs(30))
            .json(&body)
            .send()
            .await
            .map_err(http_err)?;
        let status = resp.status().as_u16();
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.map_err(http_err)?;
        if status != 201 {
            return Err(ClientError::Status {
                method: "POST".into(),
                url,
                status,
                body: text.chars().take(300).collect(),
            });
        }
        let token = token.ok_or_else(|| ClientError::Decode {
            url: url.clone(),
            reason: "no X-Subject-Token header".into(),
        })?;
        let network_url = match &self.network_url {
            Some(u) => u.clone(),
            None => {
                let doc: Value = serde_json::from_str(&text).map_err(|e| ClientError::Decode {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
                self.find_endpoint(&doc)
                    .ok_or_else(|| ClientError::NoEndpoint {
                        interface: c.interface.clone(),
                        region: c.region.clone(),
                    })?
            }
        };
        Ok(Session {
            token,
            network_url,
            at: Instant::now(),
        })
    }

    fn find_endpoint(&self, doc: &Value) -> Option<String> {
        let catalog = doc.pointer("/token/catalog")?.as_array()?;
        let svc = catalog
            .iter()
            .find(|s| s.get("type").and_then(Value::as_str) == Some("network"))?;
        svc.get("endpoints")?
            .as_array()?
            .iter()
            .filter(|e| e.get("interface").and_then(Value::as_str) == Some(&self.creds.interface))
            .find(|e| match &self.creds.region {
                None => true,
                Some(r) => [e.get("region"), e.get("region_id")]
                    .iter()
                    .any(|v| v.and_then(|v| v.as_str()) == Some(r.as_str())),
            })
            .and_then(|e| e.get("url")?.as_str())
            .map(trim_url)
    }

    async fn session(&self, renew: bool) -> Result<(String, String), ClientError> {
        let mut guard = self.session.lock().await;
        let fresh = guard
            .as_ref()
            .is_some_and(|s| !renew && s.at.elapsed() < TOKEN_REUSE);
        if !fresh {
            *guard = Some(self.login().await?);
        }
        let s = guard.as_ref().ok_or_else(|| ClientError::Decode {
            url: self.creds.auth_url.clone(),
            reason: "no session".into(),
        })?;
        Ok((s.token.clone(), s.network_url.clone()))
    }

    /// Sends a request to the network API (`path` from the endpoint root, e.g.
    /// `/v2.0/ports`); a 401 triggers one re-login.
    pub async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let mut renew = false;
        loop {
            let (token, base) = self.session(renew).await?;
            let url = format!("{base}{path}");
            let http_err = |source| ClientError::Http {
                method: method.to_string(),
                url: url.clone(),
                source,
            };
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(timeout)
                .header("X-Auth-Token", token)
                .header("Accept", "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(http_err)?;
            let status = resp.status().as_u16();
            let text = resp.text().await.map_err(http_err)?;
            if status == 401 && !renew {
                renew = true;
                continue;
            }
            if status == 410 {
                return Err(ClientError::Gone);
            }
            if !(200..300).contains(&status) {
                return Err(ClientError::Status {
                    method: method.to_string(),
                    url,
                    status,
                    body: text.chars().take(500).collect(),
                });
            }
            let text = if text.trim().is_empty() {
                "null"
            } else {
                &text
            };
            return serde_json::from_str(text).map_err(|e| ClientError::Decode {
                url,
                reason: e.to_string(),
            });
        }
    }

    /// The network API's root URL (configured, or from the token's catalog).
    pub async fn network_url(&self) -> Result<String, ClientError> {
        Ok(self.session(false).await?.1)
    }

    /// `GET path` returning JSON.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call::<(), Value>(reqwest::Method::GET, path, None, Duration::from_secs(60))
            .await
    }

    /// `POST /agent/v1/report`.
    pub async fn report(&self, r: &AgentReport) -> Result<ReportReply, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("{PREFIX}/report"),
            Some(r),
            Duration::from_secs(30),
        )
        .await
    }

    /// `GET /agent/v1/hosts/{host}/state`.
    pub async fn state(&self, host: &str) -> Result<HostState, ClientError> {
        self.call::<(), HostState>(
            reqwest::Method::GET,
            &format!("{PREFIX}/hosts/{}/state", segment(host)),
            None,
            Duration::from_secs(120),
        )
        .await
    }

    /// `GET /agent/v1/hosts/{host}/changes?since=&timeout=` (long poll).
    pub async fn changes(
        &self,
        host: &str,
        since: i64,
        timeout: u64,
    ) -> Result<ChangeBatch, ClientError> {
        self.call::<(), ChangeBatch>(
            reqwest::Method::GET,
            &format!(
                "{PREFIX}/hosts/{}/changes?since={since}&timeout={timeout}",
                segment(host)
            ),
            None,
            Duration::from_secs(timeout + 30),
        )
        .await
    }

    /// `POST /agent/v1/floatingips/{id}/status`.
    pub async fn floatingip_status(
        &self,
        fip_id: &str,
        host: &str,
        status: neutrino_wire::FloatingIpStatus,
    ) -> Result<(), ClientError> {
        let body = neutrino_wire::FloatingIpStatusReport {
            host: host.to_string(),
            status,
        };
        self.call::<_, Value>(
            reqwest::Method::POST,
            &format!("{PREFIX}/floatingips/{}/status", segment(fip_id)),
            Some(&body),
            Duration::from_secs(30),
        )
        .await
        .map(|_| ())
    }

    /// `POST /agent/v1/ports/{id}/status`.
    pub async fn port_status(
        &self,
        port_id: &str,
        host: &str,
        status: PortStatus,
    ) -> Result<(), ClientError> {
        let body = PortStatusReport {
            host: host.to_string(),
            status,
        };
        self.call::<_, Value>(
            reqwest::Method::POST,
            &format!("{PREFIX}/ports/{}/status", segment(port_id)),
            Some(&body),
            Duration::from_secs(30),
        )
        .await
        .map(|_| ())
    }

    /// Tells the server this host's DHCP server has loaded these ports' host entries.
    pub async fn dhcp_ready(&self, host: &str, port_ids: &[String]) -> Result<(), ClientError> {
        let body = DhcpReadyReport {
            host: host.to_string(),
            port_ids: port_ids.to_vec(),
        };
        self.call::<_, Value>(
            reqwest::Method::POST,
            &format!("{PREFIX}/dhcp-ready"),
            Some(&body),
            Duration::from_secs(30),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments() {
        assert_eq!(segment("host-1.example"), "host-1.example");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
