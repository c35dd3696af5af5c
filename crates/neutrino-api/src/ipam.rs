//! IP address management: address arithmetic, allocation pools, subnet-pool carving, and the
//! allocation of fixed IPs to ports.
//!
//! Owns the `ip_allocations` rows (one per fixed IP; the primary key `(network_id,
//! ip_address)` makes an address unique in its network) and the pure computations behind
//! subnets and subnet pools (default pools, CIDR set arithmetic, EUI-64). Allocation is
//! correct under concurrency because it only ever inserts with `ON CONFLICT DO NOTHING` and
//! looks at the row count; it must never check-then-insert, and must never scan a subnet's
//! allocations on the common path (the per-subnet [`Hints`] make port creation flat as a
//! subnet fills).
//!
//! Interface used by ports.rs (keep these signatures):
//! - `Hints`: per-subnet allocation hints (Default + Send + Sync).
//! - `allocate_any(state, tx, subnet, network_id, port_id) -> ApiResult<String>`: inserts an
//!   `ip_allocations` row for a free address of the subnet's allocation pools and returns it;
//!   409 `IpAddressGenerationFailure` when none is left.
//! - `allocate_specific(state, tx, subnet, network_id, port_id, ip) -> ApiResult<String>`:
//!   validates that `ip` belongs to the subnet (400 `InvalidIpForSubnet` otherwise), inserts it;
//!   409 `IpAddressAlreadyAllocated` when taken. Returns the canonical text form.
//! - `allocate_eui64(state, tx, subnet, network_id, port_id, mac) -> ApiResult<String>`: the
//!   SLAAC / DHCPv6-stateless address of a MAC on an auto-address subnet.
//! - `release_port(tx, port_id)`: deletes all allocations of a port.
//! - `release_ip(tx, network_id, ip)`: deletes one allocation.
//!
//! The port row must exist (in the same transaction) before its addresses are inserted: the
//! `port_id` column references `ports`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use axum::http::StatusCode;
use ipnet::{IpNet, Ipv6Net};
use serde_json::{Value, json};

use neutrino_core::db::{self, Obj};
use neutrino_core::{ApiError, ApiResult};

use crate::ApiState;

// ---------------------------------------------------------------------------------------------
// Address arithmetic (pure).

/// An inclusive range of addresses of one family, as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    /// First address.
    pub first: u128,
    /// Last address (inclusive).
    pub last: u128,
}

impl Range {
    /// Number of addresses in the range.
    pub fn size(&self) -> u128 {
        // A range never spans the whole IPv6 space in practice; saturate rather than wrap.
        (self.last - self.first).saturating_add(1)
    }

    /// Whether `a` lies in the range.
    pub fn contains(&self, a: u128) -> bool {
        self.first <= a && a <= self.last
    }
}

/// An address as an integer.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// An integer as an address of the given family (IPv4 keeps the low 32 bits).
pub fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from((v & 0xffff_ffff) as u32))
    }
}

/// The text form stored and returned for an address (RFC 5952 for IPv6, as netaddr prints).
pub fn ip_text(v: u128, v6: bool) -> String {
    from_u128(v, v6).to_string()
}

/// Parses an address, refusing anything that is not a plain address.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// Parses `addr/len` (the prefix length is required, as Neutron's subnet validator wants).
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    if !s.contains('/') {
        return None;
    }
    s.parse().ok()
}

/// First and last address of a network, as integers.
pub fn net_range(net: &IpNet) -> Range {
    Range {
        first: to_u128(net.network()),
        last: to_u128(net.broadcast()),
    }
}

fn is_v6(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(_))
}

fn max_bits(v6: bool) -> u8 {
    if v6 { 128 } else { 32 }
}

fn low_mask(host_bits: u32) -> u128 {
    if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

/// Neutron's default allocation pools (`ipam/utils.generate_pools`): every address but the
/// network address (and the IPv4 broadcast), minus the gateway; a single-address subnet keeps
/// its address, and /31 or /127 get no pool.
pub fn default_pools(net: &IpNet, gateway: Option<IpAddr>) -> Vec<Range> {
    let r = net_range(net);
    if r.first == r.last {
        return vec![r];
    }
    let first = r.first + 1;
    let last = if is_v6(net) { r.last } else { r.last - 1 };
    if first >= last {
        return vec![];
    }
    let whole = Range { first, last };
    match gateway.map(to_u128) {
        Some(g) if whole.contains(g) && is_v6(net) == gateway.is_some_and(|g| g.is_ipv6()) => {
            let mut out = Vec::with_capacity(2);
            if g > whole.first {
                out.push(Range {
                    first: whole.first,
                    last: g - 1,
                });
            }
            if g < whole.last {
                out.push(Range {
                    first: g + 1,
                    last: whole.last,
                });
            }
            out
        }
        _ => vec![whole],
    }
}

/// Whether `ip` may be a fixed IP on a subnet with `net` (`ipam_utils.check_subnet_ip`): inside
/// the CIDR, and for IPv4 not the network or broadcast address (single-address and /31 subnets
/// excepted); for IPv6 the network address (subnet-router anycast) only for router ports or
/// when the owner is unknown ("").
pub fn check_subnet_ip(net: &IpNet, ip: IpAddr, port_owner: &str) -> bool {
    if ip.is_ipv6() != is_v6(net) || !net.contains(&ip) {
        return false;
    }
    let r = net_range(net);
    let a = to_u128(ip);
    if is_v6(net) {
        a != r.first || port_owner.is_empty() || is_router_owner(port_owner)
    } else if net.prefix_len() >= 31 {
        true
    } else {
        a != r.first && a != r.last
    }
}

/// Device owners of router ports (`ROUTER_PORT_OWNERS`).
pub fn is_router_owner(owner: &str) -> bool {
    matches!(
        owner,
        "network:router_interface"
            | "network:router_interface_distributed"
            | "network:ha_router_replicated_interface"
            | "network:router_gateway"
            | "network:router_centralized_snat"
    )
}

/// Whether a subnet hands out EUI-64 addresses itself (`ipv6_utils.is_auto_address_subnet`).
pub fn is_auto_address(subnet: &Obj) -> bool {
    ["ipv6_address_mode", "ipv6_ra_mode"].iter().any(|k| {
        matches!(
            subnet.get(*k).and_then(Value::as_str),
            Some("slaac" | "dhcpv6-stateless")
        )
    })
}

/// Parses a MAC address written with `:` or `-` separators.
fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    Some(out)
}

/// The EUI-64 address of `mac` in `prefix` (oslo `get_ipv6_addr_by_EUI64`: the MAC with
/// `ff:fe` inserted in the middle and the universal/local bit flipped, added to the prefix).
pub fn eui64(prefix: &Ipv6Net, mac: &str) -> Option<Ipv6Addr> {
    let m = parse_mac(mac)?;
    let iid = u64::from_be_bytes([m[0], m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    let base = u128::from(prefix.network());
    // As oslo: (prefix.first + eui64) ^ (1 << 57), which flips the U/L bit of the MAC.
    Some(Ipv6Addr::from(
        base.wrapping_add(u128::from(iid)) ^ (1u128 << 57),
    ))
}

/// Total number of addresses in `pools`.
pub fn pool_size(pools: &[Range]) -> u128 {
    pools
        .iter()
        .fold(0u128, |acc, r| acc.saturating_add(r.size()))
}

/// Reads the stored `allocation_pools` of a subnet (ignoring malformed entries), sorted.
pub fn pools_of(subnet: &Obj) -> Vec<Range> {
    let mut out: Vec<Range> = subnet
        .get("allocation_pools")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let s = parse_ip(p.get("start")?.as_str()?)?;
                    let e = parse_ip(p.get("end")?.as_str()?)?;
                    let (first, last) = (to_u128(s), to_u128(e));
                    (first <= last).then_some(Range { first, last })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Renders pools as Neutron does: `[{"start": ..., "end": ...}]`.
pub fn pools_json(pools: &[Range], v6: bool) -> Value {
    Value::Array(
        pools
            .iter()
            .map(|r| json!({"start": ip_text(r.first, v6), "end": ip_text(r.last, v6)}))
            .collect(),
    )
}

/// The smallest pool address `>= a`, wrapping to the first pool address.
fn at_or_after(pools: &[Range], a: u128) -> Option<u128> {
    pools
        .iter()
        .find(|r| r.last >= a)
        .map(|r| r.first.max(a))
        .or_else(|| pools.first().map(|r| r.first))
}

/// The pool address following `a` (wrapping).
fn following(pools: &[Range], a: u128) -> Option<u128> {
    match a.checked_add(1) {
        Some(n) => at_or_after(pools, n),
        None => pools.first().map(|r| r.first),
    }
}

// ---------------------------------------------------------------------------------------------
// CIDR set arithmetic for subnet pools (pure).

/// Merges overlapping and adjacent ranges; the result is sorted and disjoint.
pub fn merge_ranges(mut rs: Vec<Range>) -> Vec<Range> {
    rs.sort();
    let mut out: Vec<Range> = Vec::with_capacity(rs.len());
    for r in rs {
        match out.last_mut() {
            Some(l) if l.last == u128::MAX || r.first <= l.last + 1 => l.last = l.last.max(r.last),
            _ => out.push(r),
        }
    }
    out
}

/// `a − b` for sorted, disjoint range lists.
pub fn subtract_ranges(a: &[Range], b: &[Range]) -> Vec<Range> {
    let b = merge_ranges(b.to_vec());
    let mut out = Vec::new();
    for r in a {
        let mut cur = Some(*r);
        for x in &b {
            let Some(c) = cur else { break };
            if x.last < c.first || x.first > c.last {
                continue;
            }
            if x.first > c.first {
                out.push(Range {
                    first: c.first,
                    last: x.first - 1,
                });
            }
            cur = if x.last < c.last {
                Some(Range {
                    first: x.last + 1,
                    last: c.last,
                })
            } else {
                None
            };
        }
        if let Some(c) = cur {
            out.push(c);
        }
    }
    out
}

/// Splits a range into the minimal list of CIDRs, in address order.
pub fn range_to_cidrs(r: Range, v6: bool) -> Vec<IpNet> {
    let bits = u32::from(max_bits(v6));
    let mut out = Vec::new();
    let mut start = r.first;
    loop {
        let tz = if start == 0 {
            bits
        } else {
            start.trailing_zeros().min(bits)
        };
        let mut host = tz;
        while host > 0 && (start | low_mask(host)) > r.last {
            host -= 1;
        }
        let last = start | low_mask(host);
        let prefix = (bits - host) as u8;
        if let Ok(n) = IpNet::new(from_u128(start, v6), prefix) {
            out.push(n);
        }
        if last >= r.last {
            break;
        }
        start = last + 1;
    }
    out
}

/// Normalises a prefix list as Neutron's `IPSet(...).compact()`: merged, sorted CIDRs.
pub fn compact_cidrs(nets: &[IpNet]) -> Vec<IpNet> {
    let v6 = nets.first().is_some_and(is_v6);
    merge_ranges(nets.iter().map(net_range).collect())
        .into_iter()
        .flat_map(|r| range_to_cidrs(r, v6))
        .collect()
}

/// Free space of a pool (`prefixes − allocated`) as CIDRs, smallest blocks first and by
/// address within one size, as Neutron's `_get_available_prefix_list`.
pub fn available_blocks(prefixes: &[IpNet], allocated: &[IpNet]) -> Vec<IpNet> {
    let v6 = prefixes.first().is_some_and(is_v6);
    let p = merge_ranges(prefixes.iter().map(net_range).collect());
    let a: Vec<Range> = allocated.iter().map(net_range).collect();
    let mut blocks: Vec<IpNet> = subtract_ranges(&p, &a)
        .into_iter()
        .flat_map(|r| range_to_cidrs(r, v6))
        .collect();
    // Stable sort keeps address order among blocks of one size.
    blocks.sort_by_key(|b| std::cmp::Reverse(b.prefix_len()));
    blocks
}

/// Carves the first free /`prefixlen` out of a pool (Neutron's any-subnet allocation: the
/// first free block at least that large, split, first part taken).
pub fn carve(prefixes: &[IpNet], allocated: &[IpNet], prefixlen: u8) -> Option<IpNet> {
    available_blocks(prefixes, allocated)
        .into_iter()
        .find(|b| b.prefix_len() <= prefixlen)
        .and_then(|b| IpNet::new(b.network(), prefixlen).ok())
}

/// Whether `cidr` lies wholly in the free space of a pool.
pub fn fits(prefixes: &[IpNet], allocated: &[IpNet], cidr: &IpNet) -> bool {
    let p = merge_ranges(prefixes.iter().map(net_range).collect());
    let a: Vec<Range> = allocated.iter().map(net_range).collect();
    let want = net_range(cidr);
    subtract_ranges(&p, &a)
        .iter()
        .any(|r| r.first <= want.first && want.last <= r.last)
}

/// Whether two networks share an address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    is_v6(a) == is_v6(b) && (a.contains(&b.network()) || b.contains(&a.network()))
}

// ---------------------------------------------------------------------------------------------
// Allocation.

/// How many pool addresses the fast path tries before scanning the subnet's allocations.
const FAST_TRIES: usize = 8;
/// How many free addresses a scan remembers for later allocations.
const SCAN_KEEP: usize = 256;

#[derive(Debug, Default)]
struct Cursor {
    /// Next address to try (claimed by fetch-and-increment, so concurrent allocations in this
    /// process try different addresses).
    next: Option<u128>,
    /// Free addresses found by the last scan, tried before the cursor.
    free: VecDeque<u128>,
}

/// Per-subnet hints of where to look for the next free address. Only an optimisation: the
/// database decides, so stale hints (other servers, rolled back transactions) cost a retry,
/// never a duplicate.
#[derive(Default, Debug)]
pub struct Hints {
    inner: Mutex<HashMap<String, Cursor>>,
}

impl Hints {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Cursor>) -> R) -> R {
        // A poisoned lock only means another task panicked mid-update of a hint; hints are
        // advisory, so keep using them.
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Claims the next candidate address for `subnet_id`: a remembered free address, else the
    /// cursor's address (which then moves on, so concurrent allocations in this process try
    /// different addresses).
    fn claim(&self, subnet_id: &str, pools: &[Range]) -> Option<u128> {
        self.with(|m| {
            let c = m.entry(subnet_id.to_string()).or_default();
            while let Some(a) = c.free.pop_front() {
                if pools.iter().any(|r| r.contains(a)) {
                    return Some(a);
                }
            }
            // The first allocation on a fresh subnet is the first pool address (the DHCP port
            // gets .2, as Neutron users expect).
            let a = match c.next {
                Some(x) => at_or_after(pools, x),
                None => pools.first().map(|r| r.first),
            }?;
            c.next = following(pools, a);
            Some(a)
        })
    }

    /// Remembers the free addresses a scan found, and continues after `taken`.
    fn refill(&self, subnet_id: &str, free: &[u128], pools: &[Range], taken: u128) {
        self.with(|m| {
            let c = m.entry(subnet_id.to_string()).or_default();
            c.free = free.iter().copied().collect();
            c.next = following(pools, taken);
        });
    }

    /// Drops the hints of a deleted subnet.
    pub fn forget(&self, subnet_id: &str) {
        self.with(|m| {
            m.remove(subnet_id);
        });
    }
}

fn str_field<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn subnet_net(subnet: &Obj) -> ApiResult<IpNet> {
    parse_cidr(str_field(subnet, "cidr"))
        .ok_or_else(|| ApiError::internal("stored subnet has no valid cidr"))
}

fn generation_failure(network_id: &str) -> ApiError {
    ApiError::conflict(
        "IpAddressGenerationFailure",
        format!("No more IP addresses available on network {network_id}."),
    )
}

fn already_allocated(ip: &str, subnet_id: &str) -> ApiError {
    ApiError::conflict(
        "IpAddressAlreadyAllocated",
        format!("IP address {ip} already allocated in subnet {subnet_id}"),
    )
}

/// 400 `InvalidIpForSubnet`.
pub fn invalid_ip_for_subnet(ip: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidIpForSubnet",
        format!("IP address {ip} is not a valid IP for the specified subnet."),
    )
}

/// Inserts one allocation; `Ok(false)` when the address is already taken in the network.
async fn try_insert(
    tx: &mut sqlx::AnyConnection,
    network_id: &str,
    subnet_id: &str,
    port_id: &str,
    ip: &str,
) -> ApiResult<bool> {
    let res = sqlx::query(
        "INSERT INTO ip_allocations (network_id, ip_address, subnet_id, port_id) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(network_id)
    .bind(ip)
    .bind(subnet_id)
    .bind(port_id)
    .execute(&mut *tx)
    .await;
    match res {
        Ok(r) => Ok(r.rows_affected() == 1),
        // The subnet was deleted by a concurrent transaction (the port row is the caller's).
        Err(e) if db::is_fk_violation(&e) => Err(ApiError::not_found("Subnet", subnet_id)),
        Err(e) => Err(e.into()),
    }
}

/// Up to `k` free addresses of `pools` (in pool order) not in `taken`.
fn first_free(pools: &[Range], taken: &HashSet<u128>, k: usize) -> Vec<u128> {
    let mut out = Vec::new();
    for r in pools {
        let mut a = r.first;
        loop {
            if !taken.contains(&a) {
                out.push(a);
                if out.len() >= k {
                    return out;
                }
            }
            if a >= r.last {
                break;
            }
            a += 1;
        }
    }
    out
}

/// Allocates any free address of `subnet` to `port_id`.
pub async fn allocate_any(
    state: &ApiState,
    tx: &mut sqlx::AnyConnection,
    subnet: &Obj,
    network_id: &str,
    port_id: &str,
) -> ApiResult<String> {
    let subnet_id = str_field(subnet, "id");
    let v6 = subnet_net(subnet).map(|n| is_v6(&n))?;
    let pools = pools_of(subnet);
    if pools.is_empty() {
        return Err(generation_failure(network_id));
    }
    // Fast path: a few addresses from the hint, each an atomic insert.
    let tries = pool_size(&pools).min(FAST_TRIES as u128);
    for _ in 0..tries {
        let Some(a) = state.ipam_hints.claim(subnet_id, &pools) else {
            break;
        };
        let ip = ip_text(a, v6);
        if try_insert(tx, network_id, subnet_id, port_id, &ip).await? {
            return Ok(ip);
        }
    }
    // Slow path: one indexed read of the subnet's allocations, then the first free addresses
    // in pool order. A conflict here means a concurrent allocation took it: try the next one,
    // and rescan only if a whole batch was taken meanwhile.
    loop {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT ip_address FROM ip_allocations WHERE subnet_id = $1")
                .bind(subnet_id)
                .fetch_all(&mut *tx)
                .await?;
        let taken: HashSet<u128> = rows
            .iter()
            .filter_map(|s| parse_ip(s))
            .map(to_u128)
            .collect();
        let free = first_free(&pools, &taken, SCAN_KEEP);
        for (i, a) in free.iter().enumerate() {
            let ip = ip_text(*a, v6);
            if try_insert(tx, network_id, subnet_id, port_id, &ip).await? {
                state
                    .ipam_hints
                    .refill(subnet_id, &free[i + 1..], &pools, *a);
                return Ok(ip);
            }
        }
        if free.len() < SCAN_KEEP {
            return Err(generation_failure(network_id));
        }
    }
}

/// Allocates a requested address of `subnet` to `port_id`. The address may lie outside the
/// allocation pools (Neutron allows that to those who may set fixed IPs).
pub async fn allocate_specific(
    _state: &ApiState,
    tx: &mut sqlx::AnyConnection,
    subnet: &Obj,
    network_id: &str,
    port_id: &str,
    ip: &str,
) -> ApiResult<String> {
    let subnet_id = str_field(subnet, "id");
    let net = subnet_net(subnet)?;
    let addr = parse_ip(ip).ok_or_else(|| invalid_ip_for_subnet(ip))?;
    if !check_subnet_ip(&net, addr, "") {
        return Err(invalid_ip_for_subnet(ip));
    }
    let text = addr.to_string();
    if try_insert(tx, network_id, subnet_id, port_id, &text).await? {
        Ok(text)
    } else {
        Err(already_allocated(&text, subnet_id))
    }
}

/// Records the EUI-64 address of `mac` on an auto-address (slaac / dhcpv6-stateless) subnet.
pub async fn allocate_eui64(
    _state: &ApiState,
    tx: &mut sqlx::AnyConnection,
    subnet: &Obj,
    network_id: &str,
    port_id: &str,
    mac: &str,
) -> ApiResult<String> {
    let subnet_id = str_field(subnet, "id");
    let IpNet::V6(net) = subnet_net(subnet)? else {
        return Err(ApiError::invalid_input(format!(
            "Subnet {subnet_id} is not an IPv6 subnet"
        )));
    };
    let addr = eui64(&net, mac).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid input for mac_address. Reason: '{mac}' is not a valid MAC address."
        ))
    })?;
    let text = addr.to_string();
    if try_insert(tx, network_id, subnet_id, port_id, &text).await? {
        Ok(text)
    } else {
        Err(already_allocated(&text, subnet_id))
    }
}

/// Frees every address of a port.
pub async fn release_port(tx: &mut sqlx::AnyConnection, port_id: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM ip_allocations WHERE port_id = $1")
        .bind(port_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Frees one address.
pub async fn release_ip(tx: &mut sqlx::AnyConnection, network_id: &str, ip: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM ip_allocations WHERE network_id = $1 AND ip_address = $2")
        .bind(network_id)
        .bind(ip)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn texts(pools: &[Range], v6: bool) -> Vec<(String, String)> {
        pools
            .iter()
            .map(|r| (ip_text(r.first, v6), ip_text(r.last, v6)))
            .collect()
    }

    #[test]
    fn default_pools_as_neutron() {
        let p = default_pools(&net("192.168.100.0/24"), Some(ip("192.168.100.1")));
        assert_eq!(
            texts(&p, false),
            vec![("192.168.100.2".into(), "192.168.100.254".into())]
        );
        let p = default_pools(&net("10.0.0.0/24"), Some(ip("10.0.0.254")));
        assert_eq!(
            texts(&p, false),
            vec![("10.0.0.1".into(), "10.0.0.253".into())]
        );
        let p = default_pools(&net("10.0.0.0/24"), Some(ip("10.0.0.10")));
        assert_eq!(p.len(), 2);
        let p = default_pools(&net("10.0.0.0/24"), None);
        assert_eq!(
            texts(&p, false),
            vec![("10.0.0.1".into(), "10.0.0.254".into())]
        );
        // Gateway outside the CIDR leaves the pool whole.
        let p = default_pools(&net("10.0.0.0/24"), Some(ip("10.9.0.1")));
        assert_eq!(pool_size(&p), 254);
        let p = default_pools(&net("2001:db8::/64"), Some(ip("2001:db8::")));
        assert_eq!(
            texts(&p, true),
            vec![("2001:db8::1".into(), "2001:db8::ffff:ffff:ffff:ffff".into())]
        );
        assert!(default_pools(&net("10.0.0.0/31"), None).is_empty());
        assert_eq!(pool_size(&default_pools(&net("10.0.0.5/32"), None)), 1);
        assert_eq!(pool_size(&default_pools(&net("10.0.0.0/30"), None)), 2);
    }

    #[test]
    fn subnet_ip_validity() {
        let n = net("10.0.0.0/24");
        assert!(check_subnet_ip(&n, ip("10.0.0.1"), ""));
        assert!(!check_subnet_ip(&n, ip("10.0.0.0"), ""));
        assert!(!check_subnet_ip(&n, ip("10.0.0.255"), ""));
        assert!(!check_subnet_ip(&n, ip("10.0.1.1"), ""));
        assert!(!check_subnet_ip(&n, ip("::1"), ""));
        let n6 = net("2001:db8::/64");
        assert!(check_subnet_ip(&n6, ip("2001:db8::"), ""));
        assert!(!check_subnet_ip(&n6, ip("2001:db8::"), "compute:nova"));
        assert!(check_subnet_ip(
            &n6,
            ip("2001:db8::"),
            "network:router_interface"
        ));
    }

    #[test]
    fn eui64_matches_oslo() {
        // oslo: get_ipv6_addr_by_EUI64('2001:db8::/64', '00:16:3e:33:44:55')
        //   == 2001:db8::216:3eff:fe33:4455
        let p: Ipv6Net = "2001:db8::/64".parse().unwrap();
        assert_eq!(
            eui64(&p, "00:16:3e:33:44:55").unwrap().to_string(),
            "2001:db8::216:3eff:fe33:4455"
        );
        assert_eq!(
            eui64(&p, "fa:16:3e:00:00:01").unwrap().to_string(),
            "2001:db8::f816:3eff:fe00:1"
        );
        assert!(eui64(&p, "nonsense").is_none());
        assert!(eui64(&p, "00:16:3e:33:44").is_none());
    }

    #[test]
    fn cidr_sets() {
        let c = compact_cidrs(&[net("10.0.0.0/25"), net("10.0.0.128/25"), net("10.0.2.0/24")]);
        assert_eq!(c, vec![net("10.0.0.0/24"), net("10.0.2.0/24")]);
        let c = compact_cidrs(&[net("10.0.0.0/16"), net("10.0.5.0/24")]);
        assert_eq!(c, vec![net("10.0.0.0/16")]);
        assert_eq!(
            range_to_cidrs(net_range(&net("0.0.0.0/0")), false),
            vec![net("0.0.0.0/0")]
        );
        assert_eq!(
            range_to_cidrs(net_range(&net("::/0")), true),
            vec![net("::/0")]
        );
        let r = Range {
            first: to_u128(ip("10.0.0.1")),
            last: to_u128(ip("10.0.0.6")),
        };
        assert_eq!(
            range_to_cidrs(r, false),
            vec![
                net("10.0.0.1/32"),
                net("10.0.0.2/31"),
                net("10.0.0.4/31"),
                net("10.0.0.6/32")
            ]
        );
    }

    #[test]
    fn carving_takes_next_free_block() {
        let pool = [net("172.31.0.0/16")];
        let mut used = vec![];
        let a = carve(&pool, &used, 28).unwrap();
        assert_eq!(a, net("172.31.0.0/28"));
        used.push(a);
        let b = carve(&pool, &used, 28).unwrap();
        assert_eq!(b, net("172.31.0.16/28"));
        used.push(b);
        // Smallest free block first: a /26 request skips the free /28 and /27.
        let c = carve(&pool, &used, 26).unwrap();
        assert_eq!(c, net("172.31.0.64/26"));
        used.push(c);
        assert_eq!(carve(&pool, &used, 27).unwrap(), net("172.31.0.32/27"));
        assert!(carve(&pool, &used, 15).is_none());
        assert!(fits(&pool, &used, &net("172.31.1.0/24")));
        assert!(!fits(&pool, &used, &net("172.31.0.0/24")));
        assert!(!fits(&pool, &used, &net("10.0.0.0/24")));
        let full = [net("10.0.0.0/30")];
        assert!(carve(&full, &[net("10.0.0.0/30")], 30).is_none());
    }

    #[test]
    fn cursor_claims_distinct_addresses_and_wraps() {
        let h = Hints::default();
        let pools = default_pools(&net("10.0.0.0/29"), Some(ip("10.0.0.1")));
        let all: Vec<String> = (0..6)
            .filter_map(|_| h.claim("s", &pools))
            .map(|x| ip_text(x, false))
            .collect();
        assert_eq!(
            all,
            [
                "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.2"
            ]
        );
        let taken: HashSet<u128> = [to_u128(ip("10.0.0.2")), to_u128(ip("10.0.0.4"))].into();
        assert_eq!(
            first_free(&pools, &taken, 2),
            vec![to_u128(ip("10.0.0.3")), to_u128(ip("10.0.0.5"))]
        );
    }

    #[test]
    fn range_subtraction() {
        let a = [Range {
            first: 0,
            last: 100,
        }];
        let b = [
            Range {
                first: 10,
                last: 20,
            },
            Range {
                first: 90,
                last: 200,
            },
        ];
        assert_eq!(
            subtract_ranges(&a, &b),
            vec![
                Range { first: 0, last: 9 },
                Range {
                    first: 21,
                    last: 89
                }
            ]
        );
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.1.0.0/16")));
        assert!(!overlaps(&net("10.0.0.0/16"), &net("10.1.0.0/16")));
    }
}
