//! Listing through SQL (filters, sort, keyset pages) gives what Neutron's list semantics give:
//! every answer is compared with a brute-force expectation computed here from the caller's
//! full listing, over a few hundred ports with random filters, sorts, markers and directions;
//! non-admins see exactly their ports and those on their networks; list parameters the
//! attribute map refuses are 400s; `shared` filters follow RBAC as `show` does. On SQLite and
//! PostgreSQL.

mod support;

use std::cmp::Ordering;

use serde_json::{Value, json};
use support::TestServer;

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(id).collect()
}

/// Neutron's order for one attribute: null (or absent) first, then by value.
fn cmp_attr(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()).unwrap(),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => panic!("mixed types {a} {b}"),
    }
}

fn cmp_docs(sort: &[(&str, bool)], a: &Value, b: &Value) -> Ordering {
    for (k, asc) in sort {
        let o = cmp_attr(&a[*k], &b[*k]);
        if o != Ordering::Equal {
            return if *asc { o } else { o.reverse() };
        }
    }
    Ordering::Equal
}

/// One random list request and its expected answer.
struct Case {
    query: String,
    filters: Vec<(String, Vec<String>)>,
    sort: Vec<(&'static str, bool)>,
    limit: Option<usize>,
    marker: Option<String>,
    reverse: bool,
}

const NAMES: &[&str] = &["alpha", "beta", "Gamma", "delta", ""];
const DEVICES: &[&str] = &["vm-1", "vm-2", "vm-3", ""];
const TAGS: &[&str] = &["red", "green", "blue"];

impl Case {
    fn random(rng: &mut Rng, all: &[Value], nets: &[String]) -> Case {
        let mut filters: Vec<(String, Vec<String>)> = Vec::new();
        let mut query: Vec<String> = Vec::new();
        let mut filter = |k: &str, vals: Vec<String>, query: &mut Vec<String>| {
            for v in &vals {
                query.push(format!("{k}={}", urlencode(v)));
            }
            filters.push((k.to_string(), vals));
        };
        match rng.below(9) {
            0 => {}
            1 => filter("name", vec![rng.pick(NAMES).to_string()], &mut query),
            2 => filter(
                "name",
                vec![rng.pick(NAMES).to_string(), rng.pick(NAMES).to_string()],
                &mut query,
            ),
            3 => filter("device_id", vec![rng.pick(DEVICES).to_string()], &mut query),
            4 => filter("network_id", vec![rng.pick(nets).clone()], &mut query),
            5 => filter(
                "admin_state_up",
                vec![rng.pick(&["true", "False", "yes", "0"]).to_string()],
                &mut query,
            ),
            6 => filter("tags", vec![rng.pick(TAGS).to_string()], &mut query),
            7 => {
                filter("network_id", vec![rng.pick(nets).clone()], &mut query);
                filter("device_id", vec![rng.pick(DEVICES).to_string()], &mut query);
            }
            _ => {
                let p = rng.pick(all);
                let ip = p["fixed_ips"][0]["ip_address"]
                    .as_str()
                    .unwrap()
                    .to_string();
                filter("fixed_ips", vec![format!("ip_address={ip}")], &mut query);
            }
        }
        let sorts: &[&[(&str, bool)]] = &[
            &[],
            &[("name", true)],
            &[("name", false)],
            &[("device_id", true), ("name", false)],
            &[("admin_state_up", false), ("id", false)],
            &[("status", true)],
            &[("id", false)],
            &[("mac_address", true)],
        ];
        let sort = rng.pick(sorts).to_vec();
        for (k, asc) in &sort {
            query.push(format!(
                "sort_key={k}&sort_dir={}",
                if *asc { "asc" } else { "desc" }
            ));
        }
        let limit = *rng.pick(&[None, Some(1), Some(7), Some(50)]);
        if let Some(l) = limit {
            query.push(format!("limit={l}"));
        }
        let marker = (limit.is_some() && rng.below(3) > 0).then(|| id(rng.pick(all)));
        if let Some(m) = &marker {
            query.push(format!("marker={m}"));
        }
        let reverse = limit.is_some() && rng.below(3) == 0;
        if reverse {
            query.push("page_reverse=True".into());
        }
        Case {
            query: query.join("&"),
            filters,
            sort,
            limit,
            marker,
            reverse,
        }
    }

    fn keeps(&self, p: &Value) -> bool {
        self.filters.iter().all(|(k, vals)| {
            vals.iter().any(|want| match k.as_str() {
                "fixed_ips" => {
                    let ip = want.strip_prefix("ip_address=").unwrap();
                    p["fixed_ips"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|f| f["ip_address"] == json!(ip))
                }
                "tags" => p["tags"].as_array().unwrap().contains(&json!(want)),
                "admin_state_up" => {
                    let b = matches!(want.as_str(), "true" | "yes");
                    p["admin_state_up"] == json!(b)
                }
                // A filter on an attribute the resource does not have is ignored (Neutron
                // without filter-validation).
                _ => p.get(k.as_str()).is_none_or(|v| *v == json!(want)),
            })
        })
    }

    /// Neutron's answer: filter, sort (then id ascending), and the page after (before, when
    /// reversed) the marker's position in that order.
    fn expect(&self, all: &[Value]) -> Vec<String> {
        let mut sort = self.sort.clone();
        if !sort.iter().any(|(k, _)| *k == "id") {
            sort.push(("id", true));
        }
        let mut items: Vec<&Value> = all.iter().filter(|p| self.keeps(p)).collect();
        items.sort_by(|a, b| cmp_docs(&sort, a, b));
        let Some(limit) = self.limit else {
            return items.into_iter().map(id).collect();
        };
        let marker = self
            .marker
            .as_ref()
            .and_then(|m| all.iter().find(|p| id(p) == *m));
        let page: Vec<&Value> = if self.reverse {
            let before: Vec<&Value> = items
                .into_iter()
                .filter(|p| marker.is_none_or(|m| cmp_docs(&sort, p, m) == Ordering::Less))
                .collect();
            before[before.len().saturating_sub(limit)..].to_vec()
        } else {
            items
                .into_iter()
                .filter(|p| marker.is_none_or(|m| cmp_docs(&sort, p, m) == Ordering::Greater))
                .take(limit)
                .collect()
        };
        page.into_iter().map(id).collect()
    }
}

fn urlencode(s: &str) -> String {
    s.replace('%', "%25")
        .replace('=', "%3D")
        .replace('&', "%26")
        .replace(' ', "%20")
}

/// p1 owns two networks, p2 one; ports of p1, of p2 on p1's network (made by the admin), and
/// of p2 on its own network, with names, devices, tags and states drawn at random.
async fn populate(srv: &TestServer, rng: &mut Rng, ports: usize) -> Vec<String> {
    let mut nets = Vec::new();
    for (i, owner) in ["member:p1", "member:p1", "member:p2"].iter().enumerate() {
        let n = srv.network(owner, json!({"name": format!("net{i}")})).await;
        srv.subnet(
            owner,
            json!({"network_id": id(&n), "cidr": format!("10.{i}.0.0/20"), "ip_version": 4}),
        )
        .await;
        nets.push(id(&n));
    }
    for i in 0..ports {
        let (token, net, project) = match rng.below(4) {
            0 | 1 => ("member:p1", &nets[rng.below(2)], None),
            2 => ("admin", &nets[0], Some("p2")),
            _ => ("member:p2", &nets[2], None),
        };
        let mut body = json!({
            "network_id": net,
            "name": rng.pick(NAMES),
            "device_id": rng.pick(DEVICES),
            "admin_state_up": rng.below(3) > 0,
        });
        if let Some(p) = project {
            body["project_id"] = json!(p);
        }
        if i % 5 == 0 {
            // Some ports with no name given.
            body.as_object_mut().unwrap().remove("name");
        }
        let p = srv.port(token, body).await;
        let tags: Vec<&str> = TAGS.iter().copied().filter(|_| rng.below(2) == 0).collect();
        if !tags.is_empty() {
            let (s, b) = srv
                .put(
                    &format!("/v2.0/ports/{}/tags", id(&p)),
                    "admin",
                    json!({"tags": tags}),
                )
                .await;
            assert_eq!(s, 200, "{b}");
        }
    }
    nets
}

async fn all_ports(srv: &TestServer, token: &str) -> Vec<Value> {
    let (s, b) = srv.get("/v2.0/ports", token).await;
    assert_eq!(s, 200, "{b}");
    b["ports"].as_array().unwrap().clone()
}

async fn pages_match_brute_force(srv: &TestServer) {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let nets = populate(srv, &mut rng, 240).await;
    let admin_all = all_ports(srv, "admin").await;
    assert_eq!(admin_all.len(), 240);
    for token in ["admin", "member:p1", "member:p2"] {
        let all = all_ports(srv, token).await;
        // Non-admins see their ports and those on their networks; nothing else.
        let project = token.strip_prefix("member:");
        let expected: Vec<String> = admin_all
            .iter()
            .filter(|p| {
                project.is_none_or(|pr| {
                    p["project_id"] == json!(pr)
                        || (pr == "p1"
                            && (p["network_id"] == json!(nets[0])
                                || p["network_id"] == json!(nets[1])))
                        || (pr == "p2" && p["network_id"] == json!(nets[2]))
                })
            })
            .map(id)
            .collect();
        assert_eq!(ids(&all), expected, "{token} sees its ports, in id order");
        // Pages served from stored text (an admin's, filters all answered by SQL) carry the
        // same documents as pages rendered one by one (a filter matched in memory).
        let (_, b) = srv
            .get(
                "/v2.0/ports?admin_state_up=true&admin_state_up=false",
                token,
            )
            .await;
        let rendered = b["ports"].as_array().unwrap();
        assert_eq!(
            rendered, &all,
            "{token}: stored and rendered documents agree"
        );
        for round in 0..120 {
            let case = Case::random(&mut rng, &all, &nets);
            let (s, b) = srv.get(&format!("/v2.0/ports?{}", case.query), token).await;
            assert_eq!(s, 200, "{token} {}: {b}", case.query);
            let got = ids(b["ports"].as_array().unwrap());
            for p in b["ports"].as_array().unwrap() {
                assert!(
                    all.contains(p),
                    "{token} {}: document differs: {p}",
                    case.query
                );
            }
            assert_eq!(
                got,
                case.expect(&all),
                "{token} round {round}: GET /v2.0/ports?{}",
                case.query
            );
        }
        // Walking the links forward and backward visits every port once, in order.
        let query = "sort_key=name&sort_dir=desc&limit=13";
        let mut walked = Vec::new();
        let mut next = Some(format!("/v2.0/ports?{query}"));
        while let Some(path) = next.take() {
            let (s, b) = srv.get(&path, token).await;
            assert_eq!(s, 200, "{b}");
            walked.extend(ids(b["ports"].as_array().unwrap()));
            next = b["ports_links"]
                .as_array()
                .and_then(|l| l.iter().find(|l| l["rel"] == "next"))
                .map(|l| l["href"].as_str().unwrap().replace(&srv.url, ""));
        }
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| cmp_docs(&[("name", false), ("id", true)], a, b));
        assert_eq!(walked, ids(&sorted), "{token}: forward walk");
        let mut pages = Vec::new();
        let mut prev = Some(format!("/v2.0/ports?{query}&page_reverse=True"));
        while let Some(path) = prev.take() {
            let (s, b) = srv.get(&path, token).await;
            assert_eq!(s, 200, "{b}");
            pages.push(ids(b["ports"].as_array().unwrap()));
            prev = b["ports_links"]
                .as_array()
                .and_then(|l| l.iter().find(|l| l["rel"] == "previous"))
                .map(|l| l["href"].as_str().unwrap().replace(&srv.url, ""));
        }
        let backward: Vec<String> = pages.into_iter().rev().flatten().collect();
        assert_eq!(backward, ids(&sorted), "{token}: backward walk");
    }
    // `fields` trims the page but the links still carry ids.
    let (_, b) = srv
        .get(
            "/v2.0/ports?fields=name&limit=3&sort_key=name&sort_dir=asc",
            "member:p1",
        )
        .await;
    let page = b["ports"].as_array().unwrap();
    assert_eq!(page.len(), 3);
    assert!(
        page.iter()
            .all(|p| p.as_object().unwrap().keys().eq(["name"])),
        "{b}"
    );
    assert!(
        b["ports_links"][0]["href"]
            .as_str()
            .unwrap()
            .contains("marker="),
        "{b}"
    );
    // A MAC in any notation finds its port.
    let p = &admin_all[17];
    let mac = p["mac_address"]
        .as_str()
        .unwrap()
        .to_uppercase()
        .replace(':', "-");
    let (_, b) = srv
        .get(&format!("/v2.0/ports?mac_address={mac}"), "admin")
        .await;
    assert_eq!(ids(b["ports"].as_array().unwrap()), vec![id(p)]);
}

#[tokio::test]
async fn pages_match_brute_force_sqlite() {
    pages_match_brute_force(&TestServer::start().await).await;
}

#[tokio::test]
async fn pages_match_brute_force_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    pages_match_brute_force(&srv).await;
    srv.cleanup().await;
}

/// Random sorts, names, limits, markers and directions over `collection` as `token` sees it,
/// compared with the brute-force answer.
async fn random_pages(
    srv: &TestServer,
    rng: &mut Rng,
    token: &str,
    collection: &str,
    sorts: &[&[(&'static str, bool)]],
) {
    let (s, b) = srv.get(&format!("/v2.0/{collection}"), token).await;
    assert_eq!(s, 200, "{b}");
    let all = b[collection].as_array().unwrap().clone();
    assert!(!all.is_empty(), "{token} sees some {collection}");
    let ids_in_order: Vec<String> = ids(&all);
    let mut sorted_ids = ids_in_order.clone();
    sorted_ids.sort();
    assert_eq!(ids_in_order, sorted_ids, "{collection} listed in id order");
    for round in 0..40 {
        let mut query = Vec::new();
        let mut filters = Vec::new();
        if rng.below(3) == 0 {
            let name = rng.pick(NAMES).to_string();
            query.push(format!("name={name}"));
            filters.push(("name".to_string(), vec![name]));
        }
        let sort = rng.pick(sorts).to_vec();
        for (k, asc) in &sort {
            query.push(format!(
                "sort_key={k}&sort_dir={}",
                if *asc { "asc" } else { "desc" }
            ));
        }
        let limit = *rng.pick(&[None, Some(1), Some(4)]);
        if let Some(l) = limit {
            query.push(format!("limit={l}"));
        }
        let marker = (limit.is_some() && rng.below(2) == 0).then(|| id(rng.pick(&all)));
        if let Some(m) = &marker {
            query.push(format!("marker={m}"));
        }
        let reverse = limit.is_some() && rng.below(3) == 0;
        if reverse {
            query.push("page_reverse=True".into());
        }
        let case = Case {
            query: query.join("&"),
            filters,
            sort,
            limit,
            marker,
            reverse,
        };
        let (s, b) = srv
            .get(&format!("/v2.0/{collection}?{}", case.query), token)
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            ids(b[collection].as_array().unwrap()),
            case.expect(&all),
            "{token} round {round}: GET /v2.0/{collection}?{}",
            case.query
        );
    }
}

const NO_QUOTAS: &str = "[quotas]\nquota_router = -1\nquota_floatingip = -1\nquota_network = -1\n";

async fn other_collections_page_like_neutron(srv: &TestServer) {
    let mut rng = Rng(0x0dd5_eed5_0000_0002);
    let ext = srv
        .network("admin", json!({"name": "ext", "router:external": true}))
        .await;
    srv.subnet(
        "admin",
        json!({"network_id": id(&ext), "cidr": "172.24.0.0/22", "ip_version": 4}),
    )
    .await;
    for i in 0..36 {
        let token = *rng.pick(&["member:p1", "member:p2"]);
        let name = rng.pick(NAMES);
        srv.network(token, json!({"name": name, "admin_state_up": i % 3 > 0}))
            .await;
        srv.router(token, json!({"name": name, "admin_state_up": i % 4 > 0}))
            .await;
        srv.create(
            "floatingip",
            token,
            json!({"floating_network_id": id(&ext), "description": name}),
        )
        .await;
    }
    let (s, b) = srv.get("/v2.0/floatingips?tenant_id=p2", "admin").await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["floatingips"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["project_id"] == "p2")
    );
    for token in ["admin", "member:p1", "member:p2"] {
        random_pages(
            srv,
            &mut rng,
            token,
            "networks",
            &[
                &[],
                &[("name", true)],
                &[("admin_state_up", false), ("name", true)],
                &[("status", true)],
            ],
        )
        .await;
        random_pages(
            srv,
            &mut rng,
            token,
            "routers",
            &[
                &[],
                &[("name", false)],
                &[("admin_state_up", true)],
                &[("status", false)],
            ],
        )
        .await;
        random_pages(
            srv,
            &mut rng,
            token,
            "floatingips",
            &[
                &[],
                &[("floating_ip_address", true)],
                &[("tenant_id", false)],
            ],
        )
        .await;
        random_pages(
            srv,
            &mut rng,
            token,
            "subnets",
            &[
                &[],
                &[("cidr", false)],
                &[("ip_version", true), ("name", true)],
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn other_collections_page_like_neutron_sqlite() {
    other_collections_page_like_neutron(&TestServer::start_with(NO_QUOTAS).await).await;
}

#[tokio::test]
async fn other_collections_page_like_neutron_postgres() {
    let Some(srv) = TestServer::start_pg(NO_QUOTAS).await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    other_collections_page_like_neutron(&srv).await;
    srv.cleanup().await;
}

async fn bad_request(srv: &TestServer, path: &str) -> Value {
    let (s, b) = srv.get(path, "member:p1").await;
    assert_eq!(s, 400, "GET {path}: {b}");
    b["NeutronError"].clone()
}

async fn refuses_what_the_attribute_map_refuses(srv: &TestServer) {
    let e = bad_request(srv, "/v2.0/ports?sort_key=password&sort_dir=asc").await;
    assert_eq!(
        e["message"],
        "['password'] is invalid attribute for sort_keys"
    );
    let e = bad_request(
        srv,
        "/v2.0/networks?sort_key=name&sort_key=nope&sort_dir=asc&sort_dir=asc",
    )
    .await;
    assert_eq!(e["message"], "['nope'] is invalid attribute for sort_keys");
    // Not a sort key in neutron-lib, though visible.
    bad_request(srv, "/v2.0/ports?sort_key=fixed_ips&sort_dir=asc").await;
    let e = bad_request(srv, "/v2.0/ports?sort_key=name").await;
    assert_eq!(
        e["message"],
        "The number of sort_keys and sort_dirs must be same"
    );
    let e = bad_request(srv, "/v2.0/ports?sort_key=name&sort_dir=up").await;
    assert_eq!(
        e["message"],
        "['up'] is invalid value for sort_dirs, valid value is 'asc' and 'desc'"
    );
    let e = bad_request(srv, "/v2.0/ports?admin_state_up=maybe").await;
    assert_eq!(e["type"], "InvalidInput");
    assert_eq!(
        e["message"],
        "Invalid input for operation: 'maybe' cannot be converted to boolean."
    );
    bad_request(srv, "/v2.0/networks?shared=perhaps").await;
    // The dvr and l3-ha extensions' router flags convert too.
    bad_request(srv, "/v2.0/routers?distributed=yess").await;
    bad_request(srv, "/v2.0/routers?ha=2").await;
    bad_request(srv, "/v2.0/networks?router:external=2").await;
    let e = bad_request(srv, "/v2.0/networks?mtu=big").await;
    assert_eq!(
        e["message"],
        "Invalid input for operation: 'big' is not an integer."
    );
    bad_request(srv, "/v2.0/subnets?ip_version=four").await;
    bad_request(srv, "/v2.0/subnets?enable_dhcp=sometimes").await;
    bad_request(srv, "/v2.0/ports?fixed_ips=10.0.0.1").await;
    bad_request(srv, "/v2.0/ports?fixed_ips=%3D10.0.0.1").await;
    // A bare flag is no filter (convert_kvp_list_to_dict); blanks around keys are stripped.
    let (s, b) = srv.get("/v2.0/ports?fixed_ips=True", "member:p1").await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv
        .get(
            "/v2.0/ports?fixed_ips=%20ip_address%20=10.9.9.9",
            "member:p1",
        )
        .await;
    assert_eq!((s, &b["ports"]), (200, &json!([])), "{b}");
    // What converts is accepted, in Neutron's spellings.
    let n = srv.network("member:p1", json!({"name": "conv"})).await;
    for q in [
        "admin_state_up=yes",
        "admin_state_up=On",
        "mtu=%201500%20",
        "shared=f",
    ] {
        let (s, b) = srv.get(&format!("/v2.0/networks?{q}"), "member:p1").await;
        assert_eq!(s, 200, "{q}: {b}");
        assert_eq!(ids(b["networks"].as_array().unwrap()), vec![id(&n)], "{q}");
    }
    let (s, b) = srv
        .get("/v2.0/networks?admin_state_up=no", "member:p1")
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["networks"], json!([]));
    // Show ignores list parameters, as in Neutron.
    let (s, _) = srv
        .get(
            &format!("/v2.0/networks/{}?sort_key=bogus", id(&n)),
            "member:p1",
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn refuses_what_the_attribute_map_refuses_sqlite() {
    refuses_what_the_attribute_map_refuses(&TestServer::start().await).await;
}

#[tokio::test]
async fn refuses_what_the_attribute_map_refuses_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    refuses_what_the_attribute_map_refuses(&srv).await;
    srv.cleanup().await;
}

/// RBAC targets are project ids (UUIDs).
const P1: &str = "member:11111111111141118111111111111111";
const P2_ID: &str = "22222222222242228222222222222222";
const P2: &str = "member:22222222222242228222222222222222";
const P3: &str = "member:33333333333343338333333333333333";
const P4: &str = "member:44444444444444448444444444444444";

async fn shared_follows_rbac(srv: &TestServer) {
    let net = srv.network(P1, json!({"name": "rbac-shared"})).await;
    let sub = srv
        .subnet(
            P1,
            json!({"network_id": id(&net), "cidr": "10.77.0.0/24", "ip_version": 4}),
        )
        .await;
    let (s, b) = srv
        .post(
            "/v2.0/rbac-policies",
            P1,
            json!({"rbac_policy": {"object_type": "network", "object_id": id(&net),
                "action": "access_as_shared", "target_tenant": P2_ID}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let everyone = srv
        .network(P3, json!({"name": "public", "shared": false}))
        .await;
    let everyone_sub = srv
        .subnet(
            P3,
            json!({"network_id": id(&everyone), "cidr": "10.78.0.0/24", "ip_version": 4}),
        )
        .await;
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{}", id(&everyone)),
            "admin",
            json!({"network": {"shared": true}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // (caller, is the RBAC network shared for it, does it see it)
    for (token, shared, sees) in [
        (P2, true, true),
        (P1, false, true),
        (P4, false, false),
        ("admin", false, true),
    ] {
        let (s, b) = srv
            .get(&format!("/v2.0/networks/{}", id(&net)), token)
            .await;
        assert_eq!(s, if sees { 200 } else { 404 }, "{token}: {b}");
        if sees {
            assert_eq!(b["network"]["shared"], json!(shared), "{token}: show");
        }
        for (filter, want) in [("true", shared && sees), ("false", !shared && sees)] {
            let (s, b) = srv
                .get(&format!("/v2.0/networks?shared={filter}"), token)
                .await;
            assert_eq!(s, 200, "{b}");
            let got = ids(b["networks"].as_array().unwrap());
            assert_eq!(
                got.contains(&id(&net)),
                want,
                "{token} networks?shared={filter}: {b}"
            );
            // Shared with everyone: shared for every caller.
            assert_eq!(
                got.contains(&id(&everyone)),
                filter == "true",
                "{token}: {b}"
            );
            assert!(
                b["networks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|n| n["shared"] == json!(filter == "true")),
                "{token} networks?shared={filter}: {b}"
            );
            let (s, b) = srv
                .get(&format!("/v2.0/subnets?shared={filter}"), token)
                .await;
            assert_eq!(s, 200, "{b}");
            let got = ids(b["subnets"].as_array().unwrap());
            // A subnet has no `shared` on the wire (neutron-lib: not visible); the filter
            // follows its network's `shared` as that caller sees it.
            assert_eq!(
                got.contains(&id(&sub)),
                want,
                "{token} subnets?shared={filter}: {b}"
            );
            assert!(
                got.contains(&id(&everyone_sub)) == (filter == "true"),
                "{token}: {b}"
            );
        }
    }
}

#[tokio::test]
async fn shared_follows_rbac_sqlite() {
    shared_follows_rbac(&TestServer::start().await).await;
}

#[tokio::test]
async fn shared_follows_rbac_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    shared_follows_rbac(&srv).await;
    srv.cleanup().await;
}
