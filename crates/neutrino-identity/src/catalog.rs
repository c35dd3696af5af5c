//! The service catalog: `identity` (keystone) and `network` (neutron), each with public,
//! internal and admin endpoints in the configured region.
//!
//! Built once from [`IdentityConfig`]; ids are derived from the URLs so every server
//! replica publishes the same ids. The identity endpoint is `<identity_url>/v3` (as the
//! Keystone install guide bootstraps it; keystoneauth and Tempest handle versioned and
//! unversioned identity URLs alike). The network endpoint is the unversioned root, since
//! openstacksdk appends `v2.0` and Tempest prefixes `v2.0` itself. This module is read-only:
//! services, endpoints and regions cannot be changed through the API.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::IdentityConfig;
use crate::token::hex;

const INTERFACES: [&str; 3] = ["public", "internal", "admin"];

/// A catalog service with its endpoint URL.
struct Service {
    id: String,
    kind: &'static str,
    name: &'static str,
    url: String,
}

/// The fixed catalog of this deployment.
pub(crate) struct Catalog {
    services: Vec<Service>,
    region: String,
    base: String,
    token_catalog: Value,
}

fn id_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize()[..16])
}

impl Catalog {
    pub(crate) fn new(cfg: &IdentityConfig) -> Catalog {
        let services = vec![
            Service {
                id: id_of(&["service", "identity"]),
                kind: "identity",
                name: "keystone",
                url: format!("{}/v3", cfg.identity_url),
            },
            Service {
                id: id_of(&["service", "network"]),
                kind: "network",
                name: "neutron",
                url: cfg.network_url.clone(),
            },
        ];
        let mut c = Catalog {
            services,
            region: cfg.region.clone(),
            base: cfg.identity_url.clone(),
            token_catalog: Value::Null,
        };
        c.token_catalog = c
            .services
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "type": s.kind,
                    "name": s.name,
                    "endpoints": INTERFACES.iter().map(|i| json!({
                        "id": id_of(&["endpoint", s.kind, i]),
                        "interface": i,
                        "region": c.region,
                        "region_id": c.region,
                        "url": s.url,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        c
    }

    /// The `catalog` of a token.
    pub(crate) fn token_catalog(&self) -> &Value {
        &self.token_catalog
    }

    /// `GET /v3/services` items.
    pub(crate) fn services(&self) -> Vec<Value> {
        self.services
            .iter()
            .map(|s| {
                json!({
                    "id": s.id, "type": s.kind, "name": s.name, "enabled": true,
                    "description": "",
                    "links": {"self": format!("{}/v3/services/{}", self.base, s.id)},
                })
            })
            .collect()
    }

    /// `GET /v3/endpoints` items.
    pub(crate) fn endpoints(&self) -> Vec<Value> {
        self.services
            .iter()
            .flat_map(|s| {
                INTERFACES.iter().map(move |i| {
                    let id = id_of(&["endpoint", s.kind, i]);
                    json!({
                        "id": id, "interface": i, "region": self.region,
                        "region_id": self.region, "url": s.url, "service_id": s.id,
                        "enabled": true,
                        "links": {"self": format!("{}/v3/endpoints/{id}", self.base)},
                    })
                })
            })
            .collect()
    }

    /// `GET /v3/regions` items.
    pub(crate) fn regions(&self) -> Vec<Value> {
        vec![json!({
            "id": self.region, "description": "", "parent_region_id": null,
            "links": {"self": format!("{}/v3/regions/{}", self.base, self.region)},
        })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_unversioned_network_endpoint() {
        let cfg = IdentityConfig {
            network_url: "http://h:9696".into(),
            identity_url: "http://h:5000".into(),
            ..Default::default()
        };
        let c = Catalog::new(&cfg);
        let cat = c.token_catalog().as_array().unwrap();
        let net = cat.iter().find(|s| s["type"] == "network").unwrap();
        let public = net["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["interface"] == "public")
            .unwrap();
        assert_eq!(public["url"], "http://h:9696");
        assert_eq!(public["region_id"], "RegionOne");
        let idn = cat.iter().find(|s| s["type"] == "identity").unwrap();
        assert_eq!(idn["endpoints"][0]["url"], "http://h:5000/v3");
        assert_eq!(c.endpoints().len(), 6);
    }
}
