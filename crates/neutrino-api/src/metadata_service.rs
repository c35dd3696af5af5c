//! The metadata service: Nova's metadata paths under `/metadata` on the API listener, for
//! requests a metadata proxy forwards on an instance's behalf.
//!
//! Owns the check of the proxy's signature (`X-Instance-ID-Signature` = hex HMAC-SHA256 of
//! `X-Instance-ID` under `metadata_proxy_shared_secret`, compared in constant time), the
//! check that `X-Tenant-ID` is the instance's project, and the rendering of the instance's
//! data in the OpenStack (`openstack/<version>/meta_data.json`, `network_data.json`,
//! `user_data`, `vendor_data.json`) and EC2 (`<version>/meta-data/...`, `user-data`) formats.
//! The data are the instance data document of metadata.rs plus what the store knows about
//! the instance's ports (`device_id` = instance id): addresses, subnets, DNS servers,
//! floating IPs and security groups.
//!
//! There is no Keystone token here: the signature is the authentication, so this module
//! must never answer anything about an instance before the signature is verified, never
//! serve one project's data to a request signed for another project's instance, and never
//! write to the store.

use std::net::IpAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use neutrino_core::ApiResult;
use neutrino_core::db::{self, Obj};

use crate::{ApiState, floatingips, metadata, networks, security_groups, subnets};

/// Versions of the OpenStack format (`GET /openstack`): Nova's release dates, so that
/// cloud-init picks one that has `network_data.json` (2015-10-15 and later). Every version
/// serves the same documents.
const OPENSTACK_VERSIONS: &[&str] = &[
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "2020-10-14",
    "latest",
];

/// Versions of the EC2 format (`GET /`).
const EC2_VERSIONS: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "latest",
];

/// Message of a refused signature (Nova's wording).
const BAD_SIGNATURE: &str = "Invalid proxy request signature.";

/// Routes of the service; they carry their own authentication (the signature).
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/metadata", get(serve))
        .route("/metadata/", get(serve))
        .route("/metadata/{*path}", get(serve))
        .with_state(state)
}

/// The signature a proxy sends for `instance_id`: lowercase hex HMAC-SHA256 under `secret`.
pub fn sign(secret: &str, instance_id: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(instance_id.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Whether `signature` is the signature of `instance_id` (constant-time comparison).
pub fn verify(secret: &str, instance_id: &str, signature: &str) -> bool {
    let Some(sig) = unhex(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(instance_id.as_bytes());
    mac.verify_slice(&sig).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    s.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [h, l] => Some((hex_digit(*h)? << 4) | hex_digit(*l)?),
            _ => None,
        })
        .collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        body.into(),
    )
        .into_response()
}

fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "404 Not Found\n\nThe resource could not be found.\n",
    )
}

fn json_body(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// `GET /metadata/...`.
async fn serve(State(st): State<ApiState>, uri: Uri, headers: HeaderMap) -> Response {
    let forwarded = header_str(&headers, "x-forwarded-for")
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .unwrap_or("")
        .to_string();
    let Some(instance_id) = header_str(&headers, "x-instance-id") else {
        return text(
            StatusCode::BAD_REQUEST,
            "X-Instance-ID header is missing from request.",
        );
    };
    let Some(tenant_id) = header_str(&headers, "x-tenant-id") else {
        return text(
            StatusCode::BAD_REQUEST,
            "X-Tenant-ID header is missing from request.",
        );
    };
    let Some(secret) = st.cfg.metadata_proxy_shared_secret.as_deref() else {
        tracing::error!(
            instance_id,
            "metadata request refused: metadata_proxy_shared_secret is not configured"
        );
        return text(StatusCode::FORBIDDEN, BAD_SIGNATURE);
    };
    let signature = header_str(&headers, "x-instance-id-signature").unwrap_or("");
    if !verify(secret, instance_id, signature) {
        tracing::warn!(
            instance_id,
            remote = %forwarded,
            "metadata request with an invalid signature refused"
        );
        return text(StatusCode::FORBIDDEN, BAD_SIGNATURE);
    }
    let inst = match Instance::load(&st, instance_id, &forwarded).await {
        Ok(Some(i)) => i,
        Ok(None) => {
            tracing::info!(instance_id, "metadata request for an unknown instance");
            return not_found();
        }
        Err(e) => return e.into_response(),
    };
    if inst.project_id != tenant_id {
        tracing::warn!(
            instance_id,
            tenant_id,
            "metadata request: tenant does not match the instance's project"
        );
        return not_found();
    }
    let path = uri.path().strip_prefix("/metadata").unwrap_or("");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    route(&inst, &segs)
}

fn route(inst: &Instance, segs: &[&str]) -> Response {
    match segs {
        [] => text(StatusCode::OK, EC2_VERSIONS.join("\n")),
        ["openstack"] => text(StatusCode::OK, OPENSTACK_VERSIONS.join("\n")),
        ["openstack", v, rest @ ..] if OPENSTACK_VERSIONS.contains(v) => openstack(inst, rest),
        [v, rest @ ..] if EC2_VERSIONS.contains(v) => ec2(inst, v, rest),
        _ => not_found(),
    }
}

fn openstack(inst: &Instance, rest: &[&str]) -> Response {
    match rest {
        [] => {
            let mut names = vec!["meta_data.json", "network_data.json"];
            if inst.user_data.is_some() {
                names.push("user_data");
            }
            names.push("vendor_data.json");
            text(StatusCode::OK, names.join("\n"))
        }
        ["meta_data.json"] => json_body(&inst.meta_data_json()),
        ["network_data.json"] => json_body(&inst.network_data_json()),
        ["vendor_data.json"] => json_body(&json!({})),
        ["user_data"] => user_data(inst),
        _ => not_found(),
    }
}

fn user_data(inst: &Instance) -> Response {
    match &inst.user_data {
        Some(u) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            u.clone(),
        )
            .into_response(),
        None => not_found(),
    }
}

fn ec2(inst: &Instance, version: &str, rest: &[&str]) -> Response {
    match rest {
        [] => {
            let mut names = vec!["meta-data/"];
            if inst.user_data.is_some() {
                names.push("user-data");
            }
            text(StatusCode::OK, names.join("\n"))
        }
        ["user-data"] => user_data(inst),
        ["meta-data", path @ ..] => {
            let mut node = &inst.ec2_tree(version);
            for seg in path {
                match node {
                    Node::Dir(children) => match children.iter().find(|c| c.key == *seg) {
                        Some(c) => node = &c.node,
                        None => return not_found(),
                    },
                    Node::Leaf(_) => return not_found(),
                }
            }
            match node {
                Node::Leaf(v) => text(StatusCode::OK, v.clone()),
                Node::Dir(children) => text(
                    StatusCode::OK,
                    children
                        .iter()
                        .map(Entry::listing)
                        .collect::<Vec<_>>()
                        .join("\n"),
                ),
            }
        }
        _ => not_found(),
    }
}

/// A node of the EC2 `meta-data/` tree.
enum Node {
    Leaf(String),
    Dir(Vec<Entry>),
}

struct Entry {
    /// The path segment.
    key: String,
    /// What the parent's listing shows instead of the key (`0=mykey` for public keys).
    shown: Option<String>,
    node: Node,
}

impl Entry {
    fn leaf(key: &str, v: impl Into<String>) -> Entry {
        Entry {
            key: key.into(),
            shown: None,
            node: Node::Leaf(v.into()),
        }
    }

    fn dir(key: &str, children: Vec<Entry>) -> Entry {
        Entry {
            key: key.into(),
            shown: None,
            node: Node::Dir(children),
        }
    }

    /// The line of this entry in its directory's listing: directories end with `/`, unless
    /// the entry has a display name (as Nova lists public keys: `0=name`).
    fn listing(&self) -> String {
        match (&self.shown, &self.node) {
            (Some(s), _) => s.clone(),
            (None, Node::Dir(_)) => format!("{}/", self.key),
            (None, Node::Leaf(_)) => self.key.clone(),
        }
    }
}

/// One port of the instance with what the formats need about it.
struct PortInfo {
    port: Obj,
    /// (subnet document, address) per fixed IP whose subnet still exists.
    addresses: Vec<(Obj, IpAddr)>,
    network: Option<Obj>,
    floating: Vec<String>,
}

/// Everything the formats render about one instance.
struct Instance {
    id: String,
    project_id: String,
    name: String,
    hostname: String,
    availability_zone: String,
    public_keys: Vec<(String, String)>,
    meta: Obj,
    user_data: Option<String>,
    ports: Vec<PortInfo>,
    /// The address the request came from when it is one of the instance's, else the first
    /// IPv4 address of its ports.
    local_ipv4: Option<IpAddr>,
    security_groups: Vec<String>,
}

fn s<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or("")
}

fn non_empty(o: Option<&Obj>, k: &str) -> Option<String> {
    o.and_then(|o| o.get(k))
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Deterministic short hex tag of an instance id (for EC2's `i-`/`r-` identifiers).
fn tag(id: &str, salt: &str) -> String {
    let d = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update(id.as_bytes())
        .finalize();
    hex(&d[..4])
}

impl Instance {
    /// Loads the instance: its document and ports. None when neither exists.
    async fn load(st: &ApiState, id: &str, remote: &str) -> ApiResult<Option<Instance>> {
        let db = st.db.reader();
        let doc = db::get(db, &metadata::KIND, id).await?;
        let ports = metadata::instance_ports(db, id).await?;
        let project_id = ports
            .iter()
            .map(|p| s(p, "project_id"))
            .find(|p| !p.is_empty())
            .or_else(|| doc.as_ref().map(|d| s(d, "project_id")))
            .unwrap_or("")
            .to_string();
        if doc.is_none() && ports.is_empty() {
            return Ok(None);
        }
        // A document of another project than the instance's ports is never served.
        let doc = doc.filter(|d| s(d, "project_id") == project_id);

        let mut infos = Vec::with_capacity(ports.len());
        let mut group_ids: Vec<String> = Vec::new();
        for port in ports {
            let mut addresses = Vec::new();
            for f in port
                .get("fixed_ips")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(sid), Some(ip)) = (
                    f.get("subnet_id").and_then(Value::as_str),
                    f.get("ip_address")
                        .and_then(Value::as_str)
                        .and_then(|a| a.parse::<IpAddr>().ok()),
                ) else {
                    continue;
                };
                if let Some(sub) = db::get(db, &subnets::KIND, sid).await? {
                    addresses.push((sub, ip));
                }
            }
            let network = db::get(db, &networks::KIND, s(&port, "network_id")).await?;
            let floating = db::list(db, &floatingips::KIND, Some(("port_id", s(&port, "id"))))
                .await?
                .iter()
                .map(|f| s(f, "floating_ip_address").to_string())
                .filter(|a| !a.is_empty())
                .collect();
            for g in port
                .get("security_groups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !group_ids.iter().any(|x| x == g) {
                    group_ids.push(g.to_string());
                }
            }
            infos.push(PortInfo {
                port,
                addresses,
                network,
                floating,
            });
        }
        let mut security_groups = Vec::new();
        for g in &group_ids {
            if let Some(sg) = db::get(db, &security_groups::KIND, g).await? {
                security_groups.push(s(&sg, "name").to_string());
            }
        }
        // The port the request came from comes first: its addresses are the instance's
        // local and public ones.
        let remote: Option<IpAddr> = remote.parse().ok();
        if let Some(r) = remote
            && let Some(i) = infos
                .iter()
                .position(|p| p.addresses.iter().any(|(_, a)| *a == r))
        {
            let p = infos.remove(i);
            infos.insert(0, p);
        }
        let local_ipv4 = remote
            .filter(|r| {
                r.is_ipv4()
                    && infos
                        .iter()
                        .any(|p| p.addresses.iter().any(|(_, a)| a == r))
            })
            .or_else(|| {
                infos
                    .iter()
                    .flat_map(|p| p.addresses.iter().map(|(_, a)| *a))
                    .find(IpAddr::is_ipv4)
            });

        let d = doc.as_ref();
        let first_port = infos.first().map(|p| &p.port);
        let hostname = non_empty(d, "hostname")
            .or_else(|| non_empty(first_port, "dns_name"))
            .or_else(|| local_ipv4.map(|a| format!("host-{}", a.to_string().replace('.', "-"))))
            .unwrap_or_else(|| {
                id.chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect()
            });
        let mut public_keys: Vec<(String, String)> = d
            .and_then(|d| d.get("public_keys"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        public_keys.sort();
        Ok(Some(Instance {
            id: id.to_string(),
            project_id,
            name: non_empty(d, "name").unwrap_or_else(|| hostname.clone()),
            availability_zone: non_empty(d, "availability_zone")
                .unwrap_or_else(|| "nova".to_string()),
            hostname,
            public_keys,
            meta: d
                .and_then(|d| d.get("meta"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            user_data: d
                .and_then(|d| d.get("user_data"))
                .and_then(Value::as_str)
                .map(str::to_string),
            ports: infos,
            local_ipv4,
            security_groups,
        }))
    }

    /// `openstack/<version>/meta_data.json`.
    fn meta_data_json(&self) -> Value {
        let keys: Vec<Value> = self
            .public_keys
            .iter()
            .map(|(n, k)| json!({"name": n, "type": "ssh", "data": k}))
            .collect();
        let public_keys: serde_json::Map<String, Value> = self
            .public_keys
            .iter()
            .map(|(n, k)| (n.clone(), Value::String(k.clone())))
            .collect();
        json!({
            "uuid": self.id,
            "name": self.name,
            "hostname": self.hostname,
            "availability_zone": self.availability_zone,
            "launch_index": 0,
            "project_id": self.project_id,
            "public_keys": public_keys,
            "keys": keys,
            "meta": self.meta,
            "devices": [],
        })
    }

    /// `openstack/<version>/network_data.json`: a link per port, a network per address,
    /// the DNS servers of the subnets as services.
    fn network_data_json(&self) -> Value {
        let mut links = Vec::new();
        let mut nets = Vec::new();
        let mut services: Vec<Value> = Vec::new();
        for p in &self.ports {
            let pid = s(&p.port, "id");
            let link_id = format!("tap{}", pid.get(..11).unwrap_or(pid));
            let vif = s(&p.port, "binding:vif_type");
            let vif = match vif {
                "" | "unbound" | "binding_failed" => "phy",
                v => v,
            };
            links.push(json!({
                "id": link_id,
                "vif_id": pid,
                "type": vif,
                "mtu": p.network.as_ref().and_then(|n| n.get("mtu")).cloned().unwrap_or(Value::Null),
                "ethernet_mac_address": s(&p.port, "mac_address"),
            }));
            for (sub, addr) in &p.addresses {
                let v6 = addr.is_ipv6();
                let dns: Vec<Value> = sub
                    .get("dns_nameservers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|a| json!({"type": "dns", "address": a}))
                    .collect();
                for d in &dns {
                    if !services.contains(d) {
                        services.push(d.clone());
                    }
                }
                let mut net = serde_json::Map::new();
                net.insert("id".into(), json!(format!("network{}", nets.len())));
                let dhcp = sub.get("enable_dhcp") != Some(&Value::Bool(false));
                let ty = if v6 {
                    match s(sub, "ipv6_address_mode") {
                        "" => "ipv6".to_string(),
                        m => format!("ipv6_{m}"),
                    }
                } else if dhcp {
                    "ipv4_dhcp".to_string()
                } else {
                    "ipv4".to_string()
                };
                let dynamic = ty != "ipv4" && ty != "ipv6";
                net.insert("type".into(), json!(ty));
                net.insert("link".into(), json!(link_id));
                if !dynamic {
                    let cidr: Option<ipnet::IpNet> = s(sub, "cidr").parse().ok();
                    net.insert("ip_address".into(), json!(addr.to_string()));
                    net.insert(
                        "netmask".into(),
                        json!(cidr.map(|c| c.netmask().to_string()).unwrap_or_default()),
                    );
                    let mut routes = Vec::new();
                    if let Some(gw) = non_empty(Some(sub), "gateway_ip") {
                        let any = if v6 { "::" } else { "0.0.0.0" };
                        routes.push(json!({"network": any, "netmask": any, "gateway": gw}));
                    }
                    for r in sub
                        .get("host_routes")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let dest: Option<ipnet::IpNet> = r
                            .get("destination")
                            .and_then(Value::as_str)
                            .and_then(|d| d.parse().ok());
                        if let (Some(dest), Some(hop)) =
                            (dest, r.get("nexthop").and_then(Value::as_str))
                        {
                            routes.push(json!({"network": dest.network().to_string(),
                                "netmask": dest.netmask().to_string(), "gateway": hop}));
                        }
                    }
                    net.insert("routes".into(), Value::Array(routes));
                }
                net.insert("network_id".into(), json!(s(&p.port, "network_id")));
                if !dynamic && !dns.is_empty() {
                    net.insert("services".into(), Value::Array(dns));
                }
                nets.push(Value::Object(net));
            }
        }
        json!({"links": links, "networks": nets, "services": services})
    }

    /// The floating IP of the instance: one on the port the request came from (or its
    /// first port), else any of its ports'.
    fn public_ipv4(&self) -> String {
        self.ports
            .iter()
            .flat_map(|p| p.floating.iter())
            .find(|a| a.parse::<IpAddr>().is_ok_and(|a| a.is_ipv4()))
            .cloned()
            .unwrap_or_default()
    }

    /// The EC2 `meta-data/` tree of `version` (keys appear from the version Nova added
    /// them in).
    fn ec2_tree(&self, version: &str) -> Node {
        let since = |v: &str| version == "latest" || version >= v;
        let mut e = vec![
            Entry::leaf("ami-id", "ami-00000000"),
            Entry::leaf("ami-launch-index", "0"),
            Entry::leaf("ami-manifest-path", "FIXME"),
        ];
        if since("2007-12-15") {
            e.push(Entry::dir(
                "block-device-mapping",
                vec![Entry::leaf("ami", "vda")],
            ));
        }
        e.push(Entry::leaf("hostname", self.hostname.clone()));
        if since("2008-09-01") {
            e.push(Entry::leaf("instance-action", "none"));
        }
        e.push(Entry::leaf(
            "instance-id",
            format!("i-{}", tag(&self.id, "instance")),
        ));
        if since("2007-01-19") {
            e.push(Entry::leaf("instance-type", ""));
        }
        e.push(Entry::leaf("local-hostname", self.hostname.clone()));
        e.push(Entry::leaf(
            "local-ipv4",
            self.local_ipv4.map(|a| a.to_string()).unwrap_or_default(),
        ));
        if since("2008-02-01") {
            e.push(Entry::dir(
                "placement",
                vec![Entry::leaf(
                    "availability-zone",
                    self.availability_zone.clone(),
                )],
            ));
        }
        e.push(Entry::leaf("public-hostname", self.hostname.clone()));
        e.push(Entry::leaf("public-ipv4", self.public_ipv4()));
        if !self.public_keys.is_empty() {
            let keys = self
                .public_keys
                .iter()
                .enumerate()
                .map(|(i, (name, key))| Entry {
                    key: i.to_string(),
                    shown: Some(format!("{i}={name}")),
                    node: Node::Dir(vec![Entry::leaf("openssh-key", key.clone())]),
                })
                .collect();
            e.push(Entry::dir("public-keys", keys));
        }
        e.push(Entry::leaf(
            "reservation-id",
            format!("r-{}", tag(&self.id, "reservation")),
        ));
        e.push(Entry::leaf(
            "security-groups",
            self.security_groups.join("\n"),
        ));
        Node::Dir(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trip() {
        let sig = sign("secret", "instance-1");
        assert_eq!(sig.len(), 64);
        assert!(
            sig.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(verify("secret", "instance-1", &sig));
        assert!(verify("secret", "instance-1", &sig.to_uppercase()));
        assert!(!verify("secret", "instance-2", &sig));
        assert!(!verify("other", "instance-1", &sig));
        assert!(!verify("secret", "instance-1", ""));
        assert!(!verify("secret", "instance-1", "zz"));
        assert!(!verify("secret", "instance-1", &sig[..62]));
    }

    #[test]
    fn known_hmac_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
