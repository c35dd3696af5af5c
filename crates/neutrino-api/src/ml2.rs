//! ML2: network segments from the operator's type drivers, provider attributes and MTU.
//!
//! Owns what a network's segments are: the `[ml2*]` configuration ([`Ml2Config`]), validation
//! of provider attributes (`provider:*` and the multi-provider `segments` list) as Neutron's
//! type drivers do it, reservation of explicitly requested segmentation IDs, allocation of a
//! segment for project networks from `[ml2] tenant_network_types`, release when the network or
//! segment goes, the `network_segments` store used by the `segment` extension, and the network
//! MTU. Every function works inside the caller's transaction.
//!
//! Uniqueness of segmentation IDs is the database's job: `segment_allocations` has one row per
//! allocated (type, physical network, ID), inserted with `ON CONFLICT DO NOTHING` and judged by
//! the number of rows affected. Ranges are never pre-populated and nothing here ever checks
//! before inserting. The in-memory cursor ([`Ml2Config`] keeps one per pool) only makes the
//! first guess good; it is never trusted for correctness.
//!
//! This module must never touch hosts, and never hold anything but SQL inside a transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use axum::http::StatusCode;
use serde_json::{Value, json};

use neutrino_core::config::{ConfigError, Ini};
use neutrino_core::db::{self, Kind, Obj};
use neutrino_core::{ApiError, ApiResult};

use crate::ApiState;

/// Storage of network segments (the `segment` extension's resource).
pub const KIND: Kind = Kind {
    resource: "segment",
    table: "network_segments",
    columns: &["network_id", "network_type", "physical_network"],
};

/// The `(section, key)` options this module reads, for `Config::log_unknown`.
pub const KNOWN_OPTIONS: &[(&str, &str)] = &[
    ("ml2", "type_drivers"),
    ("ml2", "tenant_network_types"),
    ("ml2", "project_network_types"),
    ("ml2", "external_network_type"),
    ("ml2", "mechanism_drivers"),
    ("ml2", "extension_drivers"),
    ("ml2", "path_mtu"),
    ("ml2", "physical_network_mtus"),
    ("ml2", "overlay_ip_version"),
    ("ml2_type_flat", "flat_networks"),
    ("ml2_type_vlan", "network_vlan_ranges"),
    ("ml2_type_vxlan", "vni_ranges"),
    ("ml2_type_vxlan", "vxlan_group"),
    ("ml2_type_gre", "tunnel_id_ranges"),
    ("ml2_type_geneve", "vni_ranges"),
    ("ml2_type_geneve", "max_header_size"),
];

const PROVIDER_TYPE: &str = "provider:network_type";
const PROVIDER_PHYSNET: &str = "provider:physical_network";
const PROVIDER_SEGID: &str = "provider:segmentation_id";
const PROVIDER: [&str; 3] = [PROVIDER_TYPE, PROVIDER_PHYSNET, PROVIDER_SEGID];

/// IPv4 and IPv6 minimum link MTUs (a subnet of that family needs at least this much).
const IPV4_MIN_MTU: i64 = 68;
const IPV6_MIN_MTU: i64 = 1280;

/// Encapsulation overheads on top of the outer IP header (neutron-lib constants).
const VXLAN_ENCAP_OVERHEAD: i64 = 30;
const GRE_ENCAP_OVERHEAD: i64 = 22;
const GENEVE_ENCAP_MIN_OVERHEAD: i64 = 30;

/// How many cursor guesses to try before scanning the allocated IDs for a gap.
const CURSOR_TRIES: usize = 3;
/// Free IDs collected per scan of a pool.
const SCAN_BATCH: usize = 32;
/// Upper bound on scans per allocation; each scan only repeats when concurrent writers took
/// every candidate, and those rows are committed by then, so this is never reached in practice.
const MAX_SCANS: usize = 64;

/// A network type (one ML2 type driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetworkType {
    /// Connectivity within one host only.
    Local,
    /// Untagged on a physical network.
    Flat,
    /// 802.1Q-tagged on a physical network.
    Vlan,
    /// GRE tunnels between hosts.
    Gre,
    /// VXLAN tunnels between hosts.
    Vxlan,
    /// Geneve tunnels between hosts.
    Geneve,
}

impl NetworkType {
    /// All types, in Neutron's default `type_drivers` order.
    pub const ALL: [NetworkType; 6] = [
        NetworkType::Local,
        NetworkType::Flat,
        NetworkType::Vlan,
        NetworkType::Gre,
        NetworkType::Vxlan,
        NetworkType::Geneve,
    ];

    /// The wire name (`vxlan`).
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::Local => "local",
            NetworkType::Flat => "flat",
            NetworkType::Vlan => "vlan",
            NetworkType::Gre => "gre",
            NetworkType::Vxlan => "vxlan",
            NetworkType::Geneve => "geneve",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<NetworkType> {
        NetworkType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether the type is an overlay tunnel (no physical network, ID per type).
    pub fn is_tunnel(self) -> bool {
        matches!(
            self,
            NetworkType::Gre | NetworkType::Vxlan | NetworkType::Geneve
        )
    }

    /// The valid segmentation IDs of the type, if it has any.
    pub fn id_bounds(self) -> Option<(i64, i64)> {
        match self {
            NetworkType::Local | NetworkType::Flat => None,
            NetworkType::Vlan => Some((1, 4094)),
            NetworkType::Gre => Some((1, (1 << 32) - 1)),
            NetworkType::Vxlan | NetworkType::Geneve => Some((1, (1 << 24) - 1)),
        }
    }
}

/// Which physical networks may carry flat networks (`[ml2_type_flat] flat_networks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlatNetworks {
    /// `*`: any name.
    Any,
    /// Only these names; empty disables flat provider networks.
    Listed(Vec<String>),
}

/// A configuration error in an `[ml2*]` section.
#[derive(Debug, thiserror::Error)]
pub enum Ml2ConfigError {
    /// A value of the wrong form, with where it was found.
    #[error("invalid value {value:?} for [{section}] {key}: {reason}")]
    Invalid {
        /// Section name.
        section: String,
        /// Option name.
        key: String,
        /// The offending value (or list entry).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A scalar option that did not parse.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn invalid(section: &str, key: &str, value: &str, reason: impl Into<String>) -> Ml2ConfigError {
    Ml2ConfigError::Invalid {
        section: section.to_string(),
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// The ML2 options, parsed and checked once at start-up.
#[derive(Debug)]
pub struct Ml2Config {
    /// `[ml2] type_drivers`: the types networks may have.
    pub type_drivers: Vec<NetworkType>,
    /// `[ml2] project_network_types` (deprecated name `tenant_network_types`), tried in order.
    pub tenant_network_types: Vec<NetworkType>,
    /// `[ml2] external_network_type`: type for external networks created without provider
    /// attributes (unset: they are allocated like project networks).
    pub external_network_type: Option<NetworkType>,
    /// `[ml2] mechanism_drivers`.
    pub mechanism_drivers: Vec<String>,
    /// `[ml2] extension_drivers`.
    pub extension_drivers: Vec<String>,
    /// `[ml2] path_mtu` (0: use `global_physnet_mtu`); applies to overlay types.
    pub path_mtu: i64,
    /// `[ml2] physical_network_mtus` (`physnet:mtu`), for flat and VLAN segments.
    pub physical_network_mtus: BTreeMap<String, i64>,
    /// `[ml2] overlay_ip_version` (4 or 6): the outer header of tunnels.
    pub overlay_ip_version: u8,
    /// `[ml2_type_flat] flat_networks`.
    pub flat_networks: FlatNetworks,
    /// `[ml2_type_vlan] network_vlan_ranges`: physical networks in order of first mention, each
    /// with its project VLAN ranges (sorted, merged; empty when listed without a range).
    pub network_vlan_ranges: Vec<(String, Vec<(i64, i64)>)>,
    /// `[ml2_type_vxlan] vni_ranges` (sorted, merged).
    pub vxlan_vni_ranges: Vec<(i64, i64)>,
    /// `[ml2_type_gre] tunnel_id_ranges` (sorted, merged).
    pub gre_tunnel_id_ranges: Vec<(i64, i64)>,
    /// `[ml2_type_geneve] vni_ranges` (sorted, merged).
    pub geneve_vni_ranges: Vec<(i64, i64)>,
    /// `[ml2_type_geneve] max_header_size`.
    pub geneve_max_header_size: i64,
    /// `[DEFAULT] global_physnet_mtu`.
    pub global_physnet_mtu: i64,
    /// Next candidate per pool (type, physical network or ''): an optimisation only.
    cursors: Mutex<HashMap<(NetworkType, String), i64>>,
}

impl Default for Ml2Config {
    /// Neutron's defaults.
    fn default() -> Self {
        Ml2Config {
            type_drivers: NetworkType::ALL.to_vec(),
            tenant_network_types: vec![NetworkType::Local],
            external_network_type: None,
            mechanism_drivers: vec![],
            extension_drivers: vec![],
            path_mtu: 0,
            physical_network_mtus: BTreeMap::new(),
            overlay_ip_version: 4,
            flat_networks: FlatNetworks::Any,
            network_vlan_ranges: vec![],
            vxlan_vni_ranges: vec![],
            gre_tunnel_id_ranges: vec![],
            geneve_vni_ranges: vec![],
            geneve_max_header_size: GENEVE_ENCAP_MIN_OVERHEAD,
            global_physnet_mtu: 1500,
            cursors: Mutex::new(HashMap::new()),
        }
    }
}

fn parse_types(ini: &Ini, key: &str, default: &[&str]) -> Result<Vec<NetworkType>, Ml2ConfigError> {
    let mut out = Vec::new();
    for name in ini.list("ml2", key, default) {
        let t = NetworkType::parse(&name).ok_or_else(|| {
            invalid(
                "ml2",
                key,
                &name,
                "unknown network type (expected local, flat, vlan, gre, vxlan or geneve)",
            )
        })?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

fn parse_int(section: &str, key: &str, entry: &str, s: &str) -> Result<i64, Ml2ConfigError> {
    s.trim()
        .parse::<i64>()
        .map_err(|e| invalid(section, key, entry, format!("{s:?} is not an integer: {e}")))
}

/// Sorts and merges overlapping or adjacent ranges.
fn merge_ranges(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn check_range(
    section: &str,
    key: &str,
    entry: &str,
    ty: NetworkType,
    (lo, hi): (i64, i64),
) -> Result<(), Ml2ConfigError> {
    let (min, max) = ty.id_bounds().unwrap_or((0, 0));
    if lo < min || hi > max {
        return Err(invalid(
            section,
            key,
            entry,
            format!("{} IDs must be within {min}..{max}", ty.as_str()),
        ));
    }
    if lo > hi {
        return Err(invalid(
            section,
            key,
            entry,
            "the end of the range is lower than its start",
        ));
    }
    Ok(())
}

fn parse_tunnel_ranges(
    ini: &Ini,
    section: &str,
    key: &str,
    ty: NetworkType,
) -> Result<Vec<(i64, i64)>, Ml2ConfigError> {
    let mut out = Vec::new();
    for entry in ini.list(section, key, &[]) {
        let Some((lo, hi)) = entry.split_once(':') else {
            return Err(invalid(section, key, &entry, "expected <min>:<max>"));
        };
        let r = (
            parse_int(section, key, &entry, lo)?,
            parse_int(section, key, &entry, hi)?,
        );
        check_range(section, key, &entry, ty, r)?;
        out.push(r);
    }
    Ok(merge_ranges(out))
}

impl Ml2Config {
    /// Parses the ML2 options from the merged INI. Malformed values are errors naming the
    /// section and key, so the server can refuse to start (Neutron exits too).
    pub fn from_ini(ini: &Ini) -> Result<Ml2Config, Ml2ConfigError> {
        let defaults: Vec<&str> = NetworkType::ALL.iter().map(|t| t.as_str()).collect();
        let type_drivers = parse_types(ini, "type_drivers", &defaults)?;
        // `project_network_types` is the current name; `tenant_network_types` the deprecated one.
        let tenant_key = if ini.get("ml2", "project_network_types").is_some() {
            "project_network_types"
        } else {
            "tenant_network_types"
        };
        let tenant_network_types = parse_types(ini, tenant_key, &["local"])?;
        for t in &tenant_network_types {
            if !type_drivers.contains(t) {
                return Err(invalid(
                    "ml2",
                    tenant_key,
                    t.as_str(),
                    "network type is not in [ml2] type_drivers",
                ));
            }
        }
        let external_network_type = match ini.opt_string("ml2", "external_network_type") {
            None => None,
            Some(name) => match NetworkType::parse(&name) {
                Some(t) if type_drivers.contains(&t) => Some(t),
                _ => {
                    return Err(invalid(
                        "ml2",
                        "external_network_type",
                        &name,
                        "network type is not in [ml2] type_drivers",
                    ));
                }
            },
        };
        let path_mtu = ini.int("ml2", "path_mtu", 0)?;
        if path_mtu < 0 {
            return Err(invalid(
                "ml2",
                "path_mtu",
                &path_mtu.to_string(),
                "must not be negative",
            ));
        }
        let mut physical_network_mtus = BTreeMap::new();
        for entry in ini.list("ml2", "physical_network_mtus", &[]) {
            let Some((name, mtu)) = entry.rsplit_once(':') else {
                return Err(invalid(
                    "ml2",
                    "physical_network_mtus",
                    &entry,
                    "expected <physical_network>:<mtu>",
                ));
            };
            let mtu = parse_int("ml2", "physical_network_mtus", &entry, mtu)?;
            if name.trim().is_empty() || mtu < 0 {
                return Err(invalid(
                    "ml2",
                    "physical_network_mtus",
                    &entry,
                    "expected <physical_network>:<mtu>",
                ));
            }
            physical_network_mtus.insert(name.trim().to_string(), mtu);
        }
        let overlay_ip_version = match ini.int("ml2", "overlay_ip_version", 4)? {
            4 => 4,
            6 => 6,
            other => {
                return Err(invalid(
                    "ml2",
                    "overlay_ip_version",
                    &other.to_string(),
                    "expected 4 or 6",
                ));
            }
        };
        let flat = ini.list("ml2_type_flat", "flat_networks", &["*"]);
        let flat_networks = if flat.iter().any(|n| n == "*") {
            FlatNetworks::Any
        } else {
            FlatNetworks::Listed(flat)
        };
        let (sec, key) = ("ml2_type_vlan", "network_vlan_ranges");
        let mut vlan: Vec<(String, Vec<(i64, i64)>)> = Vec::new();
        for entry in ini.list(sec, key, &[]) {
            let parts: Vec<&str> = entry.split(':').collect();
            let (name, range) = match parts.as_slice() {
                [name] => (name.trim(), None),
                [name, lo, hi] => (
                    name.trim(),
                    Some((
                        parse_int(sec, key, &entry, lo)?,
                        parse_int(sec, key, &entry, hi)?,
                    )),
                ),
                _ => {
                    return Err(invalid(
                        sec,
                        key,
                        &entry,
                        "expected <physical_network> or <physical_network>:<vlan_min>:<vlan_max>",
                    ));
                }
            };
            if name.is_empty() {
                return Err(invalid(sec, key, &entry, "Empty physical network name."));
            }
            if let Some(r) = range {
                check_range(sec, key, &entry, NetworkType::Vlan, r)?;
            }
            let slot = match vlan.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    vlan.push((name.to_string(), vec![]));
                    vlan.len() - 1
                }
            };
            if let (Some(r), Some((_, ranges))) = (range, vlan.get_mut(slot)) {
                ranges.push(r);
            }
        }
        let network_vlan_ranges = vlan
            .into_iter()
            .map(|(n, r)| (n, merge_ranges(r)))
            .collect();
        let geneve_max_header_size = ini.int(
            "ml2_type_geneve",
            "max_header_size",
            GENEVE_ENCAP_MIN_OVERHEAD,
        )?;
        if geneve_max_header_size < GENEVE_ENCAP_MIN_OVERHEAD {
            return Err(invalid(
                "ml2_type_geneve",
                "max_header_size",
                &geneve_max_header_size.to_string(),
                format!("must be at least {GENEVE_ENCAP_MIN_OVERHEAD}"),
            ));
        }
        Ok(Ml2Config {
            type_drivers,
            tenant_network_types,
            external_network_type,
            mechanism_drivers: ini.list("ml2", "mechanism_drivers", &[]),
            extension_drivers: ini.list("ml2", "extension_drivers", &[]),
            path_mtu,
            physical_network_mtus,
            overlay_ip_version,
            flat_networks,
            network_vlan_ranges,
            vxlan_vni_ranges: parse_tunnel_ranges(
                ini,
                "ml2_type_vxlan",
                "vni_ranges",
                NetworkType::Vxlan,
            )?,
            gre_tunnel_id_ranges: parse_tunnel_ranges(
                ini,
                "ml2_type_gre",
                "tunnel_id_ranges",
                NetworkType::Gre,
            )?,
            geneve_vni_ranges: parse_tunnel_ranges(
                ini,
                "ml2_type_geneve",
                "vni_ranges",
                NetworkType::Geneve,
            )?,
            geneve_max_header_size,
            global_physnet_mtu: ini.int("DEFAULT", "global_physnet_mtu", 1500)?,
            cursors: Mutex::new(HashMap::new()),
        })
    }

    fn vlan_ranges(&self, physnet: &str) -> Option<&[(i64, i64)]> {
        self.network_vlan_ranges
            .iter()
            .find(|(n, _)| n == physnet)
            .map(|(_, r)| r.as_slice())
    }

    fn tunnel_ranges(&self, t: NetworkType) -> &[(i64, i64)] {
        match t {
            NetworkType::Vxlan => &self.vxlan_vni_ranges,
            NetworkType::Gre => &self.gre_tunnel_id_ranges,
            NetworkType::Geneve => &self.geneve_vni_ranges,
            _ => &[],
        }
    }

    /// The largest MTU one segment can carry, or 0 when the type has no opinion (`local`), as
    /// the type drivers' `get_mtu`: flat/VLAN take the smaller of `global_physnet_mtu` and the
    /// physical network's MTU; tunnels take the smaller of `global_physnet_mtu` and `path_mtu`
    /// minus the outer IP header and the encapsulation (VXLAN 30, GRE 22, Geneve
    /// `max_header_size`), so VXLAN over IPv4 with 1500 gives 1450.
    pub fn segment_mtu(&self, seg: &Segment) -> i64 {
        let mut mtus = Vec::new();
        if self.global_physnet_mtu > 0 {
            mtus.push(self.global_physnet_mtu);
        }
        match seg.network_type {
            NetworkType::Local => 0,
            NetworkType::Flat | NetworkType::Vlan => {
                if let Some(m) = seg
                    .physical_network
                    .as_ref()
                    .and_then(|p| self.physical_network_mtus.get(p))
                {
                    mtus.push(*m);
                }
                mtus.into_iter().min().unwrap_or(0)
            }
            t => {
                if self.path_mtu > 0 {
                    mtus.push(self.path_mtu);
                }
                let Some(base) = mtus.into_iter().min() else {
                    return 0;
                };
                let ip_header = if self.overlay_ip_version == 6 { 40 } else { 20 };
                let encap = match t {
                    NetworkType::Vxlan => VXLAN_ENCAP_OVERHEAD,
                    NetworkType::Gre => GRE_ENCAP_OVERHEAD,
                    _ => self.geneve_max_header_size,
                };
                base - ip_header - encap
            }
        }
    }

    /// The largest MTU a network with these segments can have: the smallest segment MTU, or
    /// `global_physnet_mtu` when no segment has an opinion (Neutron's `_get_network_mtu`).
    pub fn network_max_mtu(&self, segs: &[Segment]) -> i64 {
        segs.iter()
            .map(|s| self.segment_mtu(s))
            .filter(|m| *m > 0)
            .min()
            .unwrap_or(self.global_physnet_mtu)
    }

    /// Takes the cursor's candidate in `ranges` for a pool and advances the cursor past it.
    fn next_candidate(&self, key: &(NetworkType, String), ranges: &[(i64, i64)]) -> Option<i64> {
        let first = ranges.first()?.0;
        let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        let at = cursors.get(key).copied().unwrap_or(first);
        let candidate = ranges
            .iter()
            .find_map(|&(lo, hi)| (hi >= at).then_some(at.max(lo)))
            .unwrap_or(first);
        cursors.insert(key.clone(), candidate.saturating_add(1));
        Some(candidate)
    }

    fn set_cursor(&self, key: &(NetworkType, String), next: i64) {
        let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        cursors.insert(key.clone(), next);
    }
}

/// Up to `limit` IDs inside `ranges` (sorted, merged) that are not in `taken` (sorted).
fn free_ids(ranges: &[(i64, i64)], taken: &[i64], limit: usize) -> Vec<i64> {
    let mut out = Vec::new();
    let mut t = taken.iter().peekable();
    for &(lo, hi) in ranges {
        let mut v = lo;
        while v <= hi && out.len() < limit {
            while t.next_if(|x| **x < v).is_some() {}
            if t.peek() == Some(&&v) {
                v += 1;
                continue;
            }
            out.push(v);
            v += 1;
        }
    }
    out
}

/// One segment of a network, as the type drivers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The type.
    pub network_type: NetworkType,
    /// Physical network label (flat and VLAN only).
    pub physical_network: Option<String>,
    /// VLAN ID, VNI or GRE key; `None` before allocation or for types without one.
    pub segmentation_id: Option<i64>,
}

impl Segment {
    fn local() -> Segment {
        Segment {
            network_type: NetworkType::Local,
            physical_network: None,
            segmentation_id: None,
        }
    }

    /// Whether the segment still needs an ID from a pool (Neutron's `is_partial_segment`).
    fn is_partial(&self) -> bool {
        (self.network_type == NetworkType::Vlan || self.network_type.is_tunnel())
            && self.segmentation_id.is_none()
    }

    /// The `{provider:*}` triple as rendered in a network's `segments`.
    fn provider_json(&self) -> Value {
        json!({
            PROVIDER_TYPE: self.network_type.as_str(),
            PROVIDER_PHYSNET: self.physical_network,
            PROVIDER_SEGID: self.segmentation_id,
        })
    }

    /// Reads a stored segment document.
    fn from_doc(doc: &Obj) -> Option<Segment> {
        Some(Segment {
            network_type: NetworkType::parse(doc.get("network_type")?.as_str()?)?,
            physical_network: doc
                .get("physical_network")
                .and_then(Value::as_str)
                .map(str::to_string),
            segmentation_id: doc.get("segmentation_id").and_then(Value::as_i64),
        })
    }
}

/// A segment as requested, before the type driver validated it.
#[derive(Debug, Clone, Default)]
struct RawSegment {
    network_type: Option<String>,
    physical_network: Option<String>,
    segmentation_id: Option<i64>,
}

/// A Neutron exception that is not a plain `InvalidInput` (its own type name and message).
fn exc(kind: &'static str, status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError::new(status, kind, msg)
}

fn no_network_available() -> ApiError {
    ApiError::unavailable(
        "NoNetworkAvailable",
        "Unable to create the network. No project network is available for allocation.",
    )
}

/// Whether a JSON value is "set" as neutron-lib's `is_attr_set` judges it (not null).
fn is_set(v: Option<&Value>) -> bool {
    v.is_some_and(|v| !v.is_null())
}

/// Extracts the requested segments of a network create: `None` when neither `provider:*` nor
/// `segments` is given (the network gets a project segment).
fn requested_segments(net: &Obj) -> ApiResult<Option<Vec<RawSegment>>> {
    if PROVIDER.iter().any(|p| is_set(net.get(*p))) {
        if is_set(net.get("segments")) {
            return Err(exc(
                "SegmentsSetInConjunctionWithProviders",
                StatusCode::BAD_REQUEST,
                "Segments and provider values cannot both be set.",
            ));
        }
        return Ok(Some(vec![RawSegment {
            network_type: net
                .get(PROVIDER_TYPE)
                .and_then(Value::as_str)
                .map(str::to_string),
            physical_network: net
                .get(PROVIDER_PHYSNET)
                .and_then(Value::as_str)
                .map(str::to_string),
            segmentation_id: net.get(PROVIDER_SEGID).and_then(Value::as_i64),
        }]));
    }
    let Some(list) = net.get("segments").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Value::Array(list) = list else {
        return Err(ApiError::bad_request(format!(
            "Invalid input for segments. Reason: '{}' is not a list.",
            crate::attrs::display(list)
        )));
    };
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let Value::Object(s) = item else {
            return Err(ApiError::bad_request(format!(
                "Invalid input for segments. Reason: '{}' is not a dictionary.",
                crate::attrs::display(item)
            )));
        };
        let mut unknown: Vec<&str> = s
            .keys()
            .map(String::as_str)
            .filter(|k| !PROVIDER.contains(k))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(ApiError::bad_request(format!(
                "Unrecognized attribute(s) '{}'",
                unknown.join(", ")
            )));
        }
        let text = |k: &str| -> ApiResult<Option<String>> {
            match s.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(v)) => Ok(Some(v.clone())),
                Some(other) => Err(ApiError::invalid_input(format!(
                    "'{}' is not a valid string",
                    crate::attrs::display(other)
                ))),
            }
        };
        // neutron-lib's convert_and_validate_segments: a falsy segmentation_id (null, 0, "")
        // means "not specified"; anything else must convert to an integer.
        let segmentation_id = match s.get(PROVIDER_SEGID) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => None,
            Some(Value::String(v)) if v.is_empty() => None,
            Some(Value::Number(n)) if n.as_i64() == Some(0) => None,
            Some(Value::Number(n)) if n.is_i64() => n.as_i64(),
            Some(Value::String(v)) => Some(
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| ApiError::invalid_input(format!("'{v}' is not an integer")))?,
            ),
            Some(other) => {
                return Err(ApiError::invalid_input(format!(
                    "'{}' is not an integer",
                    crate::attrs::display(other)
                )));
            }
        };
        out.push(RawSegment {
            network_type: text(PROVIDER_TYPE)?,
            physical_network: text(PROVIDER_PHYSNET)?,
            segmentation_id,
        });
    }
    Ok(Some(out))
}

/// Validates a requested segment as the type driver's `validate_provider_segment` does, with
/// Neutron's messages (all `InvalidInput`).
fn validate_segment(cfg: &Ml2Config, raw: &RawSegment) -> ApiResult<Segment> {
    let Some(name) = raw.network_type.as_deref() else {
        return Err(ApiError::invalid_input("network_type required"));
    };
    let Some(t) = NetworkType::parse(name).filter(|t| cfg.type_drivers.contains(t)) else {
        return Err(ApiError::invalid_input(format!(
            "network_type value '{name}' not supported"
        )));
    };
    // Python truthiness, as the drivers test `if value`: "" and 0 count as not given.
    let physnet = raw.physical_network.clone().filter(|p| !p.is_empty());
    let seg_truthy = raw.segmentation_id.is_some_and(|v| v != 0);
    match t {
        NetworkType::Local => {
            if physnet.is_some() {
                return Err(ApiError::invalid_input(
                    "physical_network prohibited for local provider network",
                ));
            }
            if seg_truthy {
                return Err(ApiError::invalid_input(
                    "segmentation_id prohibited for local provider network",
                ));
            }
            Ok(Segment::local())
        }
        NetworkType::Flat => {
            let Some(p) = physnet else {
                return Err(ApiError::invalid_input(
                    "physical_network required for flat provider network",
                ));
            };
            match &cfg.flat_networks {
                FlatNetworks::Listed(l) if l.is_empty() => {
                    return Err(ApiError::invalid_input(
                        "Flat provider networks are disabled",
                    ));
                }
                FlatNetworks::Listed(l) if !l.contains(&p) => {
                    return Err(ApiError::invalid_input(format!(
                        "physical_network '{p}' unknown for flat provider network"
                    )));
                }
                _ => {}
            }
            if seg_truthy {
                return Err(ApiError::invalid_input(
                    "segmentation_id prohibited for flat provider network",
                ));
            }
            Ok(Segment {
                network_type: t,
                physical_network: Some(p),
                segmentation_id: None,
            })
        }
        NetworkType::Vlan => {
            match &physnet {
                Some(p) => {
                    if cfg.vlan_ranges(p).is_none() {
                        return Err(ApiError::invalid_input(format!(
                            "physical_network '{p}' unknown for VLAN provider network"
                        )));
                    }
                    check_id(t, raw.segmentation_id)?;
                }
                None if raw.segmentation_id.is_some() => {
                    return Err(ApiError::invalid_input(
                        "segmentation_id requires physical_network for VLAN provider network",
                    ));
                }
                None => {}
            }
            Ok(Segment {
                network_type: t,
                physical_network: physnet,
                segmentation_id: raw.segmentation_id,
            })
        }
        _ => {
            if physnet.is_some() {
                return Err(ApiError::invalid_input(format!(
                    "provider:physical_network specified for {name} network"
                )));
            }
            // Neutron stores any integer for tunnels; the wire formats cannot carry more than
            // the type's ID space, so out-of-range IDs are refused like VLAN's.
            check_id(t, raw.segmentation_id)?;
            Ok(Segment {
                network_type: t,
                physical_network: None,
                segmentation_id: raw.segmentation_id,
            })
        }
    }
}

fn check_id(t: NetworkType, id: Option<i64>) -> ApiResult<()> {
    match (id, t.id_bounds()) {
        (Some(v), Some((min, max))) if v < min || v > max => Err(ApiError::invalid_input(format!(
            "segmentation_id out of range ({min} through {max})"
        ))),
        _ => Ok(()),
    }
}

/// Inserts one allocation row; `false` when the ID is already taken (the primary key decides).
async fn try_allocate(
    tx: &mut sqlx::AnyConnection,
    t: NetworkType,
    physnet: &str,
    id: i64,
    network_id: &str,
    segment_id: &str,
) -> ApiResult<bool> {
    let res = sqlx::query(
        "INSERT INTO segment_allocations \
         (network_type, physical_network, segmentation_id, network_id, segment_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(t.as_str())
    .bind(physnet)
    .bind(id)
    .bind(network_id)
    .bind(segment_id)
    .execute(&mut *tx)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Allocates a free ID of pool (`t`, `physnet`) within `ranges`: first the cursor's guesses,
/// then, if they were taken, gaps found by scanning the pool's allocated IDs. `None` when the
/// ranges are exhausted.
async fn allocate_in_ranges(
    cfg: &Ml2Config,
    tx: &mut sqlx::AnyConnection,
    t: NetworkType,
    physnet: &str,
    ranges: &[(i64, i64)],
    network_id: &str,
    segment_id: &str,
) -> ApiResult<Option<i64>> {
    let (Some(lo), Some(hi)) = (
        ranges.iter().map(|r| r.0).min(),
        ranges.iter().map(|r| r.1).max(),
    ) else {
        return Ok(None);
    };
    let key = (t, physnet.to_string());
    for _ in 0..CURSOR_TRIES {
        let Some(c) = cfg.next_candidate(&key, ranges) else {
            return Ok(None);
        };
        if try_allocate(tx, t, physnet, c, network_id, segment_id).await? {
            return Ok(Some(c));
        }
    }
    // Every guess was taken: look at what is allocated (committed rows; an INSERT that races
    // with an uncommitted one waits for it, so each round makes progress).
    for _ in 0..MAX_SCANS {
        let taken: Vec<i64> = sqlx::query_scalar(
            "SELECT segmentation_id FROM segment_allocations \
             WHERE network_type = $1 AND physical_network = $2 \
             AND segmentation_id >= $3 AND segmentation_id <= $4 ORDER BY segmentation_id",
        )
        .bind(t.as_str())
        .bind(physnet)
        .bind(lo)
        .bind(hi)
        .fetch_all(&mut *tx)
        .await?;
        let free = free_ids(ranges, &taken, SCAN_BATCH);
        if free.is_empty() {
            return Ok(None);
        }
        for c in free {
            if try_allocate(tx, t, physnet, c, network_id, segment_id).await? {
                cfg.set_cursor(&key, c.saturating_add(1));
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// Allocates an ID for a segment without one (VLAN on a given or any physical network, or a
/// tunnel), from the configured project ranges. `None` when they are exhausted.
async fn allocate_partial(
    cfg: &Ml2Config,
    tx: &mut sqlx::AnyConnection,
    seg: &Segment,
    network_id: &str,
    segment_id: &str,
) -> ApiResult<Option<Segment>> {
    let t = seg.network_type;
    if t == NetworkType::Vlan {
        for (physnet, ranges) in &cfg.network_vlan_ranges {
            if seg.physical_network.as_ref().is_some_and(|p| p != physnet) {
                continue;
            }
            if let Some(id) =
                allocate_in_ranges(cfg, tx, t, physnet, ranges, network_id, segment_id).await?
            {
                return Ok(Some(Segment {
                    network_type: t,
                    physical_network: Some(physnet.clone()),
                    segmentation_id: Some(id),
                }));
            }
        }
        return Ok(None);
    }
    let ranges = cfg.tunnel_ranges(t);
    Ok(
        allocate_in_ranges(cfg, tx, t, "", ranges, network_id, segment_id)
            .await?
            .map(|id| Segment {
                network_type: t,
                physical_network: None,
                segmentation_id: Some(id),
            }),
    )
}

/// Reserves a validated, explicitly requested segment (`reserve_provider_segment`): a fully
/// specified one takes exactly its ID or fails with Neutron's in-use error; a partial one is
/// allocated from the ranges or fails with `NoNetworkAvailable`.
async fn reserve(
    cfg: &Ml2Config,
    tx: &mut sqlx::AnyConnection,
    seg: Segment,
    network_id: &str,
    segment_id: &str,
) -> ApiResult<Segment> {
    if seg.is_partial() {
        return allocate_partial(cfg, tx, &seg, network_id, segment_id)
            .await?
            .ok_or_else(no_network_available);
    }
    let t = seg.network_type;
    let physnet = seg.physical_network.clone().unwrap_or_default();
    match (t, seg.segmentation_id) {
        (NetworkType::Local, _) => Ok(seg),
        (NetworkType::Flat, _) => {
            // One flat network per physical network: the pool row (flat, physnet, 0).
            if try_allocate(tx, t, &physnet, 0, network_id, segment_id).await? {
                Ok(seg)
            } else {
                Err(exc(
                    "FlatNetworkInUse",
                    StatusCode::CONFLICT,
                    format!(
                        "Unable to create the flat network. Physical network {physnet} is in use."
                    ),
                ))
            }
        }
        (_, Some(id)) => {
            if try_allocate(tx, t, &physnet, id, network_id, segment_id).await? {
                Ok(seg)
            } else if t == NetworkType::Vlan {
                Err(exc(
                    "VlanIdInUse",
                    StatusCode::CONFLICT,
                    format!(
                        "Unable to create the network. The VLAN {id} on physical network {physnet} is in use."
                    ),
                ))
            } else {
                Err(exc(
                    "TunnelIdInUse",
                    StatusCode::CONFLICT,
                    format!("Unable to create the network. The tunnel ID {id} is in use."),
                ))
            }
        }
        (_, None) => Err(no_network_available()),
    }
}

/// Allocates a project network's segment: `[ml2] tenant_network_types` in order (or
/// `external_network_type` for external networks when set), 503 `NoNetworkAvailable` when all
/// are exhausted.
async fn allocate_tenant(
    cfg: &Ml2Config,
    tx: &mut sqlx::AnyConnection,
    external: bool,
    network_id: &str,
    segment_id: &str,
) -> ApiResult<Segment> {
    let types = match cfg.external_network_type {
        Some(t) if external => vec![t],
        _ => cfg.tenant_network_types.clone(),
    };
    for t in types {
        let seg = match t {
            NetworkType::Local => Some(Segment::local()),
            // Neutron does not allocate flat project networks.
            NetworkType::Flat => None,
            _ => {
                let partial = Segment {
                    network_type: t,
                    physical_network: None,
                    segmentation_id: None,
                };
                allocate_partial(cfg, tx, &partial, network_id, segment_id).await?
            }
        };
        if let Some(seg) = seg {
            return Ok(seg);
        }
    }
    Err(no_network_available())
}

/// A segment row about to be stored.
struct SegmentRow<'a> {
    id: &'a str,
    network_id: &'a str,
    project_id: &'a str,
    seg: &'a Segment,
    index: i64,
    name: Value,
    description: Value,
}

/// Inserts a segment row (the `segment` resource) and logs its creation.
async fn insert_segment(tx: &mut sqlx::AnyConnection, row: SegmentRow<'_>) -> ApiResult<Obj> {
    let SegmentRow {
        id,
        network_id,
        project_id,
        seg,
        index,
        name,
        description,
    } = row;
    let mut doc = Obj::new();
    doc.insert("id".into(), json!(id));
    doc.insert("network_id".into(), json!(network_id));
    doc.insert("project_id".into(), json!(project_id));
    doc.insert("name".into(), name);
    doc.insert("description".into(), description);
    doc.insert("network_type".into(), json!(seg.network_type.as_str()));
    doc.insert("physical_network".into(), json!(seg.physical_network));
    doc.insert("segmentation_id".into(), json!(seg.segmentation_id));
    doc.insert("segment_index".into(), json!(index));
    doc.insert("hosts".into(), json!([]));
    db::insert_raw(tx, &KIND, &mut doc).await?;
    sqlx::query(
        "UPDATE network_segments SET segmentation_id = $1, segment_index = $2 WHERE id = $3",
    )
    .bind(seg.segmentation_id)
    .bind(index)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    db::log_create(tx, &KIND, &doc).await?;
    Ok(doc)
}

/// The segment documents of a network, in `segment_index` order.
pub async fn network_segments<'c, E>(ex: E, network_id: &str) -> ApiResult<Vec<Obj>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let mut docs = db::list(ex, &KIND, Some(("network_id", network_id))).await?;
    docs.sort_by_key(|d| d.get("segment_index").and_then(Value::as_i64).unwrap_or(0));
    Ok(docs)
}

fn segments_of(docs: &[Obj]) -> Vec<Segment> {
    docs.iter().filter_map(Segment::from_doc).collect()
}

/// Writes the provider view of `segs` into a network document, as Neutron's
/// `extend_network_with_provider_segments`: one segment → `provider:*`; several → `segments`
/// (and no `provider:*`); none → `provider:*` null.
fn set_provider_view(net: &mut Obj, segs: &[Segment]) {
    net.remove("segments");
    for p in PROVIDER {
        net.remove(p);
    }
    match segs {
        [one] => {
            net.insert(PROVIDER_TYPE.into(), json!(one.network_type.as_str()));
            net.insert(PROVIDER_PHYSNET.into(), json!(one.physical_network));
            net.insert(PROVIDER_SEGID.into(), json!(one.segmentation_id));
        }
        [] => {
            for p in PROVIDER {
                net.insert(p.into(), Value::Null);
            }
        }
        many => {
            net.insert(
                "segments".into(),
                Value::Array(many.iter().map(Segment::provider_json).collect()),
            );
        }
    }
}

/// Resolves a requested MTU against the segments' maximum (`_get_network_mtu`): 0 or null asks
/// for the maximum; more than the maximum is refused.
fn resolve_mtu(requested: Option<i64>, max: i64) -> ApiResult<i64> {
    match requested {
        Some(m) if m > 0 => {
            if max > 0 && m > max {
                Err(ApiError::invalid_input(format!(
                    "Requested MTU is too big, maximum is {max}"
                )))
            } else {
                Ok(m)
            }
        }
        _ => Ok(max),
    }
}

fn requested_mtu(v: Option<&Value>) -> ApiResult<Option<i64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(m) if m >= 0 => Ok(Some(m)),
            _ => Err(ApiError::bad_request(format!(
                "Invalid input for mtu. Reason: '{}' should be non-negative.",
                crate::attrs::display(v)
            ))),
        },
    }
}

/// Validates provider attributes, allocates the network's segment(s) and sets `mtu`; called in
/// the creating transaction before the network row is inserted (the segment tables' foreign
/// keys are deferred to COMMIT for that reason).
pub async fn prepare_network(
    state: &ApiState,
    tx: &mut sqlx::AnyConnection,
    net: &mut Obj,
) -> ApiResult<()> {
    let cfg = &*state.ml2;
    let network_id = net
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::internal("network without id reached ML2"))?
        .to_string();
    let project_id = net
        .get("project_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mtu = requested_mtu(net.get("mtu"))?;
    // Validate everything before reserving anything (Neutron's _process_provider_create).
    let requested = match requested_segments(net)? {
        Some(raw) => {
            let segs = raw
                .iter()
                .map(|r| validate_segment(cfg, r))
                .collect::<ApiResult<Vec<_>>>()?;
            let full: Vec<&Segment> = segs.iter().filter(|s| !s.is_partial()).collect();
            if full.iter().enumerate().any(|(i, s)| full[..i].contains(s)) {
                return Err(exc(
                    "SegmentsContainDuplicateEntry",
                    StatusCode::BAD_REQUEST,
                    "Duplicate segment entry in request.",
                ));
            }
            segs
        }
        None => vec![],
    };
    let mut reserved = Vec::new();
    if requested.is_empty() {
        let seg_id = db::new_id();
        let external = net.get("router:external") == Some(&Value::Bool(true));
        reserved.push((
            seg_id.clone(),
            allocate_tenant(cfg, tx, external, &network_id, &seg_id).await?,
        ));
    } else {
        for seg in requested {
            let seg_id = db::new_id();
            let seg = reserve(cfg, tx, seg, &network_id, &seg_id).await?;
            reserved.push((seg_id, seg));
        }
    }
    for (index, (seg_id, seg)) in (0_i64..).zip(&reserved) {
        let row = SegmentRow {
            id: seg_id,
            network_id: &network_id,
            project_id: &project_id,
            seg,
            index,
            name: Value::Null,
            description: json!(""),
        };
        insert_segment(tx, row).await?;
    }
    let segs: Vec<Segment> = reserved.into_iter().map(|(_, s)| s).collect();
    set_provider_view(net, &segs);
    let mtu = resolve_mtu(mtu, cfg.network_max_mtu(&segs))?;
    net.insert("mtu".into(), Value::from(mtu));
    Ok(())
}

/// Releases the network's segments and their allocations; called in the deleting transaction.
/// (The foreign keys cascade too; deleting explicitly logs each segment's removal.)
pub async fn release_network(
    _state: &ApiState,
    tx: &mut sqlx::AnyConnection,
    net: &Obj,
) -> ApiResult<()> {
    let Some(network_id) = net.get("id").and_then(Value::as_str) else {
        return Ok(());
    };
    sqlx::query("DELETE FROM segment_allocations WHERE network_id = $1")
        .bind(network_id)
        .execute(&mut *tx)
        .await?;
    for seg in network_segments(&mut *tx, network_id).await? {
        db::remove(tx, &KIND, &seg).await?;
    }
    Ok(())
}

/// Checks an update of a network against ML2 and applies its segment side, in the updating
/// transaction, before the handler merges `changes` into the document:
///
/// - `provider:network_type` / `provider:physical_network`: refused when set to a different
///   value (Neutron's message); dropped from `changes` otherwise.
/// - `provider:segmentation_id`: as Neutron, a single-segment VLAN network may move to another
///   free VLAN while no port is bound; other types are refused. The same value is a no-op (Neutron
///   would report its own VLAN as in use).
/// - `segments`: not updatable (Neutron ignores it silently; we refuse a change, keep a no-op).
/// - `mtu`: 0/null means the maximum; more than the segments allow is refused; less than a
///   subnet of the network needs is 409 `NetworkMTUSubnetConflict`.
pub async fn update_network(
    state: &ApiState,
    tx: &mut sqlx::AnyConnection,
    net: &Obj,
    changes: &mut Obj,
) -> ApiResult<()> {
    let cfg = &*state.ml2;
    let network_id = net
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(v) = changes.remove("segments")
        && !v.is_null()
        && net.get("segments").unwrap_or(&Value::Null) != &v
    {
        return Err(ApiError::invalid_input(
            "Plugin does not support updating the following provider network attributes: segments",
        ));
    }
    for p in [PROVIDER_TYPE, PROVIDER_PHYSNET] {
        if let Some(v) = changes.remove(p)
            && !v.is_null()
            && net.get(p).unwrap_or(&Value::Null) != &v
        {
            return Err(ApiError::invalid_input(
                "Plugin does not support updating the following provider network attributes: provider:network_type, provider:physical_network",
            ));
        }
    }
    // A falsy ID (null, 0) is ignored, as Neutron's `if net_data.get(SEGMENTATION_ID)`.
    if let Some(new_id) = changes
        .remove(PROVIDER_SEGID)
        .and_then(|v| v.as_i64())
        .filter(|id| *id != 0)
        && net.get(PROVIDER_SEGID).and_then(Value::as_i64) != Some(new_id)
    {
        update_segmentation_id(state, tx, &network_id, new_id).await?;
        changes.insert(PROVIDER_SEGID.into(), json!(new_id));
    }
    if changes.contains_key("mtu") {
        let requested = requested_mtu(changes.get("mtu"))?;
        let segs = segments_of(&network_segments(&mut *tx, &network_id).await?);
        let mtu = resolve_mtu(requested, cfg.network_max_mtu(&segs))?;
        if mtu < IPV6_MIN_MTU {
            let subnets = db::list(
                &mut *tx,
                &crate::subnets::KIND,
                Some(("network_id", &network_id)),
            )
            .await?;
            let need = if subnets.is_empty() {
                None
            } else if mtu < IPV4_MIN_MTU {
                Some(IPV4_MIN_MTU)
            } else if subnets
                .iter()
                .any(|s| s.get("ip_version").and_then(Value::as_i64) == Some(6))
            {
                Some(IPV6_MIN_MTU)
            } else {
                None
            };
            if let Some(need) = need {
                return Err(exc(
                    "NetworkMTUSubnetConflict",
                    StatusCode::CONFLICT,
                    format!(
                        "MTU of {network_id} is not valid, subnet requires a minimum of {need}"
                    ),
                ));
            }
        }
        changes.insert("mtu".into(), json!(mtu));
    }
    Ok(())
}

/// Moves a single-segment VLAN network to another VLAN ID (Neutron's
/// `_update_segmentation_id`): allowed only while no port on it is bound.
async fn update_segmentation_id(
    state: &ApiState,
    tx: &mut sqlx::AnyConnection,
    network_id: &str,
    new_id: i64,
) -> ApiResult<()> {
    let cfg = &*state.ml2;
    let docs = network_segments(&mut *tx, network_id).await?;
    let [doc] = docs.as_slice() else {
        return Err(ApiError::invalid_input(
            "Provider network attributes can be updated only in provider networks with a single segment",
        ));
    };
    let Some(current) = Segment::from_doc(doc) else {
        return Err(ApiError::internal("stored segment is malformed"));
    };
    // Only mechanism drivers that can re-tag live ports (openvswitch, ovn) make their bound
    // ports acceptable; with none of them every port must be unbound.
    let mut vif_types = vec!["unbound", "binding_failed"];
    if cfg
        .mechanism_drivers
        .iter()
        .any(|m| m == "openvswitch" || m == "ovn")
    {
        vif_types.push("ovs");
    }
    let ports = db::list(
        &mut *tx,
        &crate::ports::KIND,
        Some(("network_id", network_id)),
    )
    .await?;
    if ports.iter().any(|p| {
        let vt = p
            .get("binding:vif_type")
            .and_then(Value::as_str)
            .unwrap_or("unbound");
        !vif_types.contains(&vt)
    }) {
        return Err(ApiError::invalid_input(format!(
            "Provider network attribute provider:segmentation_id cannot be updated if any port in the network has not the following binding:vif_type: {}",
            vif_types.join(", ")
        )));
    }
    if current.network_type != NetworkType::Vlan {
        return Err(ApiError::invalid_input(
            "Only VLAN type networks can be updated",
        ));
    }
    let wanted = validate_segment(
        cfg,
        &RawSegment {
            network_type: Some("vlan".into()),
            physical_network: current.physical_network.clone(),
            segmentation_id: Some(new_id),
        },
    )?;
    let seg_id = doc
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    reserve(cfg, tx, wanted, network_id, &seg_id).await?;
    if let Some(old) = current.segmentation_id {
        sqlx::query(
            "DELETE FROM segment_allocations WHERE network_type = $1 \
             AND physical_network = $2 AND segmentation_id = $3",
        )
        .bind(NetworkType::Vlan.as_str())
        .bind(current.physical_network.clone().unwrap_or_default())
        .bind(old)
        .execute(&mut *tx)
        .await?;
    }
    let mut doc = doc.clone();
    doc.insert("segmentation_id".into(), json!(new_id));
    db::save(tx, &KIND, &mut doc).await?;
    sqlx::query("UPDATE network_segments SET segmentation_id = $1 WHERE id = $2")
        .bind(new_id)
        .bind(&seg_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Input of a segment created through `/v2.0/segments` (already type-checked).
#[derive(Debug)]
pub struct NewSegment {
    /// Owning network.
    pub network_id: String,
    /// `network_type`.
    pub network_type: Option<String>,
    /// `physical_network`.
    pub physical_network: Option<String>,
    /// `segmentation_id`.
    pub segmentation_id: Option<i64>,
    /// `name` (may be null).
    pub name: Value,
    /// `description`.
    pub description: Value,
}

/// Adds a segment to an existing network (the segment plugin's create, with ML2's
/// reservation): validates and reserves it, appends it after the last `segment_index`, and
/// rewrites the network's provider view. Neutron re-validates the network MTU against the new
/// segment set, so a segment that cannot carry the network's MTU is refused.
pub async fn add_segment(
    state: &ApiState,
    tx: &mut sqlx::AnyConnection,
    req: NewSegment,
) -> ApiResult<Obj> {
    let cfg = &*state.ml2;
    let Some(mut net) =
        db::get_for_update(tx, &state.db, &crate::networks::KIND, &req.network_id).await?
    else {
        return Err(ApiError::not_found("Network", &req.network_id));
    };
    let seg = validate_segment(
        cfg,
        &RawSegment {
            network_type: req.network_type,
            physical_network: req.physical_network,
            segmentation_id: req.segmentation_id,
        },
    )?;
    let existing = network_segments(&mut *tx, &req.network_id).await?;
    let index = existing
        .iter()
        .filter_map(|d| d.get("segment_index").and_then(Value::as_i64))
        .max()
        .map_or(0, |m| m + 1);
    let seg_id = db::new_id();
    let seg = reserve(cfg, tx, seg, &req.network_id, &seg_id).await?;
    let project = net
        .get("project_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let row = SegmentRow {
        id: &seg_id,
        network_id: &req.network_id,
        project_id: &project,
        seg: &seg,
        index,
        name: req.name,
        description: req.description,
    };
    let doc = insert_segment(tx, row).await?;
    let mut segs = segments_of(&existing);
    segs.push(seg);
    let current = net.get("mtu").and_then(Value::as_i64);
    let mtu = resolve_mtu(current, cfg.network_max_mtu(&segs))?;
    set_provider_view(&mut net, &segs);
    net.insert("mtu".into(), json!(mtu));
    db::save(tx, &crate::networks::KIND, &mut net).await?;
    Ok(doc)
}

/// Deletes a segment (the segment plugin's delete, with ML2's release). Refused with 409
/// `SegmentInUse` while subnets are associated with it (Neutron's reason), and also while it
/// is the network's only segment: Neutron would leave a network without any segment, which
/// nothing can bind or carry; delete the network instead. The network MTU is kept, as Neutron
/// does on segment deletion. `expected_revision` is the request's `If-Match`, checked under the
/// lock.
pub async fn delete_segment(
    state: &ApiState,
    tx: &mut sqlx::AnyConnection,
    seg_id: &str,
    network_id: &str,
    expected_revision: Option<i64>,
) -> ApiResult<()> {
    let in_use = |reason: String| {
        exc(
            "SegmentInUse",
            StatusCode::CONFLICT,
            format!("Segment '{seg_id}' cannot be deleted: {reason}."),
        )
    };
    // Lock order network → segment, as network deletion and segment creation take them.
    let mut net = db::get_for_update(tx, &state.db, &crate::networks::KIND, network_id).await?;
    let Some(seg) = db::get_for_update(tx, &state.db, &KIND, seg_id).await? else {
        return Err(ApiError::not_found("Segment", seg_id));
    };
    crate::common::check_revision(expected_revision, &seg)?;
    let subnets: Vec<String> = db::list(
        &mut *tx,
        &crate::subnets::KIND,
        Some(("network_id", network_id)),
    )
    .await?
    .iter()
    .filter(|s| s.get("segment_id").and_then(Value::as_str) == Some(seg_id))
    .filter_map(|s| s.get("id").and_then(Value::as_str).map(str::to_string))
    .collect();
    if !subnets.is_empty() {
        return Err(in_use(format!(
            "The segment is still associated with subnet(s) {}",
            subnets.join(", ")
        )));
    }
    let docs = network_segments(&mut *tx, network_id).await?;
    let rest: Vec<Obj> = docs
        .into_iter()
        .filter(|d| d.get("id").and_then(Value::as_str) != Some(seg_id))
        .collect();
    if rest.is_empty() && net.is_some() {
        return Err(in_use(format!(
            "it is the only segment of network {network_id}; delete the network instead"
        )));
    }
    sqlx::query("DELETE FROM segment_allocations WHERE segment_id = $1")
        .bind(seg_id)
        .execute(&mut *tx)
        .await?;
    db::remove(tx, &KIND, &seg).await?;
    if let Some(net) = net.as_mut() {
        set_provider_view(net, &segments_of(&rest));
        db::save(tx, &crate::networks::KIND, net).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<Ml2Config, Ml2ConfigError> {
        Ml2Config::from_ini(&Ini::parse(text, "test").expect("ini"))
    }

    fn seg(t: NetworkType, p: Option<&str>) -> Segment {
        Segment {
            network_type: t,
            physical_network: p.map(str::to_string),
            segmentation_id: Some(1),
        }
    }

    #[test]
    fn defaults_are_neutrons() {
        let c = cfg("").unwrap();
        assert_eq!(c.type_drivers, NetworkType::ALL.to_vec());
        assert_eq!(c.tenant_network_types, vec![NetworkType::Local]);
        assert_eq!(c.flat_networks, FlatNetworks::Any);
        assert_eq!(c.geneve_max_header_size, 30);
        assert_eq!(c.overlay_ip_version, 4);
    }

    #[test]
    fn parses_ranges() {
        let c = cfg("[ml2]\ntenant_network_types = vlan,vxlan\nphysical_network_mtus = physnet2:9000\n\
             [ml2_type_vlan]\nnetwork_vlan_ranges = physnet1:40:43,physnet2,physnet1:51:55,physnet1:44:45\n\
             [ml2_type_vxlan]\nvni_ranges = 2000:2500, 1:1000\n[ml2_type_flat]\nflat_networks = a,b\n")
        .unwrap();
        assert_eq!(
            c.tenant_network_types,
            vec![NetworkType::Vlan, NetworkType::Vxlan]
        );
        assert_eq!(
            c.network_vlan_ranges,
            vec![
                ("physnet1".to_string(), vec![(40, 45), (51, 55)]),
                ("physnet2".to_string(), vec![]),
            ]
        );
        assert_eq!(c.vxlan_vni_ranges, vec![(1, 1000), (2000, 2500)]);
        assert_eq!(c.physical_network_mtus.get("physnet2"), Some(&9000));
        assert_eq!(
            c.flat_networks,
            FlatNetworks::Listed(vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn project_network_types_wins_over_deprecated_name() {
        let c = cfg("[ml2]\ntenant_network_types = vlan\nproject_network_types = vxlan\n").unwrap();
        assert_eq!(c.tenant_network_types, vec![NetworkType::Vxlan]);
    }

    #[test]
    fn malformed_values_name_section_and_key() {
        for (text, needle) in [
            (
                "[ml2_type_vxlan]\nvni_ranges = 1-100\n",
                "[ml2_type_vxlan] vni_ranges",
            ),
            (
                "[ml2_type_vxlan]\nvni_ranges = 100:1\n",
                "[ml2_type_vxlan] vni_ranges",
            ),
            (
                "[ml2_type_vxlan]\nvni_ranges = 1:16777216\n",
                "[ml2_type_vxlan] vni_ranges",
            ),
            (
                "[ml2_type_gre]\ntunnel_id_ranges = a:b\n",
                "[ml2_type_gre] tunnel_id_ranges",
            ),
            (
                "[ml2_type_vlan]\nnetwork_vlan_ranges = p:1:4095\n",
                "[ml2_type_vlan] network_vlan_ranges",
            ),
            (
                "[ml2_type_vlan]\nnetwork_vlan_ranges = p:1\n",
                "[ml2_type_vlan] network_vlan_ranges",
            ),
            (
                "[ml2_type_vlan]\nnetwork_vlan_ranges = :1:2\n",
                "[ml2_type_vlan] network_vlan_ranges",
            ),
            ("[ml2]\ntype_drivers = vxlan,bogus\n", "[ml2] type_drivers"),
            (
                "[ml2]\ntype_drivers = vxlan\ntenant_network_types = vlan\n",
                "[ml2] tenant_network_types",
            ),
            (
                "[ml2]\noverlay_ip_version = 5\n",
                "[ml2] overlay_ip_version",
            ),
            (
                "[ml2]\nphysical_network_mtus = physnet1\n",
                "[ml2] physical_network_mtus",
            ),
            ("[ml2]\npath_mtu = x\n", "[ml2] path_mtu"),
        ] {
            let e = cfg(text).expect_err(text).to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn mtu_per_type() {
        let c = cfg("[ml2]\nphysical_network_mtus = physnet2:1400\n").unwrap();
        assert_eq!(
            c.segment_mtu(&seg(NetworkType::Flat, Some("physnet1"))),
            1500
        );
        assert_eq!(
            c.segment_mtu(&seg(NetworkType::Vlan, Some("physnet2"))),
            1400
        );
        assert_eq!(c.segment_mtu(&seg(NetworkType::Vxlan, None)), 1450);
        assert_eq!(c.segment_mtu(&seg(NetworkType::Gre, None)), 1458);
        assert_eq!(c.segment_mtu(&seg(NetworkType::Geneve, None)), 1450);
        assert_eq!(c.segment_mtu(&Segment::local()), 0);
        assert_eq!(c.network_max_mtu(&[Segment::local()]), 1500);
        let c6 = cfg("[DEFAULT]\nglobal_physnet_mtu = 9000\n[ml2]\noverlay_ip_version = 6\npath_mtu = 1500\n").unwrap();
        assert_eq!(c6.segment_mtu(&seg(NetworkType::Vxlan, None)), 1430);
        assert_eq!(c6.segment_mtu(&seg(NetworkType::Vlan, Some("p"))), 9000);
        assert_eq!(
            c6.network_max_mtu(&[
                seg(NetworkType::Vlan, Some("p")),
                seg(NetworkType::Gre, None)
            ]),
            1438
        );
    }

    #[test]
    fn resolve_mtu_limits() {
        assert_eq!(resolve_mtu(None, 1450).unwrap(), 1450);
        assert_eq!(resolve_mtu(Some(0), 1450).unwrap(), 1450);
        assert_eq!(resolve_mtu(Some(1400), 1450).unwrap(), 1400);
        let e = resolve_mtu(Some(1500), 1450).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid input for operation: Requested MTU is too big, maximum is 1450."
        );
    }

    #[test]
    fn free_ids_skips_taken_across_ranges() {
        assert_eq!(free_ids(&[(1, 5)], &[1, 2, 4], 10), vec![3, 5]);
        assert_eq!(free_ids(&[(1, 2), (10, 12)], &[1, 2, 10], 2), vec![11, 12]);
        assert_eq!(free_ids(&[(1, 3)], &[1, 2, 3], 10), Vec::<i64>::new());
        assert_eq!(free_ids(&[(5, 6)], &[1, 2], 10), vec![5, 6]);
    }

    #[test]
    fn cursor_walks_ranges_and_wraps() {
        let c = Ml2Config::default();
        let key = (NetworkType::Vxlan, String::new());
        let r = [(1, 2), (10, 10)];
        let got: Vec<_> = (0..5).filter_map(|_| c.next_candidate(&key, &r)).collect();
        assert_eq!(got, vec![1, 2, 10, 1, 2]);
    }

    #[test]
    fn provider_validation_messages() {
        let c = cfg("[ml2_type_vlan]\nnetwork_vlan_ranges = physnet1:40:43\n[ml2_type_flat]\nflat_networks = physnet1\n").unwrap();
        let raw = |t: &str, p: Option<&str>, s: Option<i64>| RawSegment {
            network_type: Some(t.into()),
            physical_network: p.map(str::to_string),
            segmentation_id: s,
        };
        let msg = |r: RawSegment| validate_segment(&c, &r).unwrap_err().message;
        assert!(msg(raw("flat", None, None)).contains("physical_network required for flat"));
        assert!(
            msg(raw("flat", Some("x"), None)).contains("physical_network 'x' unknown for flat")
        );
        assert!(
            msg(raw("flat", Some("physnet1"), Some(3)))
                .contains("segmentation_id prohibited for flat")
        );
        assert!(
            msg(raw("vlan", Some("x"), Some(3))).contains("physical_network 'x' unknown for VLAN")
        );
        assert!(
            msg(raw("vlan", Some("physnet1"), Some(4095)))
                .contains("out of range (1 through 4094)")
        );
        assert!(msg(raw("vlan", None, Some(5))).contains("requires physical_network"));
        assert!(
            msg(raw("vxlan", Some("physnet1"), None))
                .contains("provider:physical_network specified for vxlan network")
        );
        assert!(
            msg(raw("local", Some("physnet1"), None))
                .contains("physical_network prohibited for local")
        );
        assert!(msg(raw("bogus", None, None)).contains("network_type value 'bogus' not supported"));
        assert!(msg(RawSegment::default()).contains("network_type required"));
        // A VLAN outside the project range is fine for an admin.
        assert!(validate_segment(&c, &raw("vlan", Some("physnet1"), Some(300))).is_ok());
    }
}
