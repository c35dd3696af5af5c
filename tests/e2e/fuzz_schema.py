"""What the API fuzz test generates: every resource's attributes as Neutron defines them
(neutron-lib's attribute maps: type, POST/PUT allowed), and for each type the values Neutron
accepts, the values it must refuse (400/404: wrong JSON type, bad UUID, unknown reference, out
of range, NUL), and odd values it may take or refuse (control characters, unicode, empty).

Generation is through hypothesis' `data.draw`, so the test's examples are reproducible
(derandomised) and the test states only what is expected of each request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from hypothesis import strategies as st

RANDOM_UUID = "5a7a3c9e-0d1b-4f3e-9a51-2b6c1f00d00d"   # exists nowhere


@dataclass
class A:
    """One attribute: NAME of KIND; POST/PUT say where Neutron accepts it."""
    name: str
    kind: str
    post: bool = True
    put: bool = True
    opts: dict = field(default_factory=dict)


def attr(name, kind, post=True, put=True, **opts):
    return A(name, kind, post, put, opts)


NAME = attr("name", "str")
DESC = attr("description", "str")
# neutron-lib's LONG_DESCRIPTION_FIELD_SIZE (address groups, port forwardings)
LONG_DESC = attr("description", "str", max=1024)
PROJECT = attr("project_id", "project", put=False)
ADMIN_UP = attr("admin_state_up", "bool")

# collection -> (singular, attributes, taggable, bulk create)
RESOURCES = {
    "networks": ("network", [
        NAME, DESC, ADMIN_UP, PROJECT,
        attr("shared", "bool"), attr("router:external", "bool"),
        attr("port_security_enabled", "bool"),
        attr("mtu", "int", lo=68, hi=1450, bad=[-1, 1451, 10 ** 12]),
        attr("qos_policy_id", "ref", ref="qos_policies", nullable=True),
        attr("availability_zone_hints", "az_hints", put=False),
        # Neutron takes provider attributes in PUT and lets ML2 decide (400 or accepted).
        attr("provider:network_type", "enum",
             values=["local", "flat", "vlan", "vxlan", "geneve", "gre"]),
        attr("provider:segmentation_id", "int", lo=1, hi=4094, lenient=True),
        attr("provider:physical_network", "str", max=64, lenient=True),
    ], True, True),
    "subnets": ("subnet", [
        NAME, DESC, PROJECT,
        attr("network_id", "ref", put=False, ref="networks"),
        attr("ip_version", "enum", put=False, values=[4, 6]),
        attr("cidr", "cidr", put=False),
        attr("gateway_ip", "ip", nullable=True),
        attr("allocation_pools", "pools"),
        attr("dns_nameservers", "ip_list"),
        attr("host_routes", "routes"),
        attr("enable_dhcp", "bool"),
        attr("ipv6_ra_mode", "enum", put=False,
             values=["slaac", "dhcpv6-stateful", "dhcpv6-stateless"], nullable=True),
        attr("ipv6_address_mode", "enum", put=False,
             values=["slaac", "dhcpv6-stateful", "dhcpv6-stateless"], nullable=True),
        attr("subnetpool_id", "ref", put=False, ref="subnetpools", nullable=True),
        attr("prefixlen", "int", put=False, lo=8, hi=30, lenient=True),
        attr("segment_id", "ref", ref="segments", nullable=True),
        attr("service_types", "str_list", lenient=True),
    ], True, True),
    "ports": ("port", [
        NAME, DESC, ADMIN_UP, PROJECT,
        attr("network_id", "ref", put=False, ref="networks"),
        attr("mac_address", "mac"),
        attr("fixed_ips", "fixed_ips"),
        attr("device_id", "str"), attr("device_owner", "str"),
        attr("security_groups", "ref_list", ref="security-groups"),
        attr("allowed_address_pairs", "aap"),
        attr("extra_dhcp_opts", "dhcp_opts"),
        attr("port_security_enabled", "bool"),
        attr("binding:host_id", "str", nullable=True, lenient=True),
        attr("binding:profile", "dict"),
        attr("binding:vnic_type", "enum", values=["normal", "direct", "macvtap", "baremetal",
                                                  "direct-physical", "virtio-forwarder"]),
    ], True, True),
    "routers": ("router", [
        NAME, DESC, ADMIN_UP, PROJECT,
        attr("external_gateway_info", "gw_info"),
        attr("routes", "routes", post=False),
        # convert_to_boolean_if_not_none: null is valid here.
        attr("distributed", "bool", nullable=True), attr("ha", "bool", nullable=True),
        attr("availability_zone_hints", "az_hints", put=False),
    ], True, False),
    "floatingips": ("floatingip", [
        DESC, PROJECT,
        attr("floating_network_id", "ref", put=False, ref="external"),
        attr("floating_ip_address", "ip", put=False),
        attr("subnet_id", "ref", put=False, ref="external_subnets", nullable=True),
        attr("port_id", "ref", ref="ports", nullable=True),
        attr("fixed_ip_address", "ip", nullable=True),
    ], True, False),
    "security-groups": ("security_group", [
        NAME, DESC, PROJECT, attr("stateful", "bool"),
    ], True, False),
    "security-group-rules": ("security_group_rule", [
        DESC, PROJECT,
        attr("security_group_id", "ref", put=False, ref="security-groups"),
        attr("direction", "enum", put=False, values=["ingress", "egress"]),
        attr("ethertype", "enum", put=False, values=["IPv4", "IPv6"]),
        attr("protocol", "protocol", put=False),
        attr("port_range_min", "int", put=False, lo=1, hi=65535, bad=[-1, 65536, 10 ** 12]),
        attr("port_range_max", "int", put=False, lo=1, hi=65535, bad=[-1, 65536, 10 ** 12]),
        # convert_ip_prefix_to_cidr turns "" into null and takes what netaddr takes (ints).
        attr("remote_ip_prefix", "cidr", put=False, nullable=True,
             bad=["10.0.0.0/33", "abc", "300.1.1.0/24", "10.0.0.0/8\x00"]),
        attr("remote_group_id", "ref", put=False, ref="security-groups", nullable=True),
        attr("remote_address_group_id", "ref", put=False, ref="address-groups",
             nullable=True),
    ], False, True),
    "subnetpools": ("subnetpool", [
        NAME, DESC, PROJECT,
        attr("prefixes", "cidr_list"),
        # Neutron answers these as strings on GET and POST (its API reference shows "64").
        attr("default_prefixlen", "int", lo=8, hi=32, lenient=True, as_string=True),
        attr("min_prefixlen", "int", lo=8, hi=32, lenient=True, as_string=True),
        attr("max_prefixlen", "int", lo=8, hi=32, lenient=True, as_string=True),
        attr("default_quota", "int", lo=1, hi=1000, lenient=True),
        attr("is_default", "bool"),
        attr("shared", "bool", put=False),
        attr("address_scope_id", "ref", ref="address-scopes", nullable=True),
    ], True, False),
    "address-scopes": ("address_scope", [
        NAME, PROJECT, attr("shared", "bool"),
        attr("ip_version", "enum", put=False, values=[4, 6]),
    ], False, False),
    "address-groups": ("address_group", [
        NAME, LONG_DESC, PROJECT, attr("addresses", "cidr_list", put=False),
    ], False, False),
    "rbac-policies": ("rbac_policy", [
        PROJECT,
        attr("object_type", "enum", put=False,
             values=["network", "security_group", "address_scope", "subnetpool",
                     "address_group"]),
        attr("object_id", "ref", put=False, ref="any"),
        attr("action", "enum", put=False, values=["access_as_shared", "access_as_external"]),
        attr("target_tenant", "target"),
    ], False, False),
    "segments": ("segment", [
        attr("name", "str", nullable=True), attr("description", "str", nullable=True),
        attr("network_id", "ref", put=False, ref="networks"),
        attr("network_type", "enum", put=False, values=["vlan", "flat", "vxlan"]),
        attr("physical_network", "str", put=False, max=64, nullable=True, lenient=True),
        attr("segmentation_id", "int", lo=1, hi=4094, lenient=True),
    ], False, False),
}

TAGGABLE = [c for c, v in RESOURCES.items() if v[2]]
# Neutron has no update of security group rules (PUT answers 405).
NO_UPDATE = {"security-group-rules"}
# Standard-attribute resources: they carry revision_number, so If-Match applies.
REVISIONED = {"networks", "subnets", "ports", "routers", "floatingips", "security-groups",
              "subnetpools", "address-groups", "segments"}
BULK = [c for c, v in RESOURCES.items() if v[3]]

PF_ATTRS = [
    LONG_DESC,
    attr("external_port", "int", lo=1, hi=65535, bad=[-1, 65536, 10 ** 12]),
    attr("internal_port", "int", lo=1, hi=65535, bad=[-1, 65536, 10 ** 12]),
    attr("internal_ip_address", "ip"),
    attr("internal_port_id", "ref", ref="ports"),
    attr("protocol", "enum", values=["tcp", "udp"]),
]
QUOTA_KEYS = ["network", "subnet", "port", "router", "floatingip", "security_group",
              "security_group_rule", "subnetpool", "rbac_policy"]

# --------------------------------------------------------------------------- value pools

# Values that are not strings, for attributes that must be strings.
NOT_STR = [123, 1.5, True, [], {}, ["a"], {"a": 1}]
# Strings Neutron must refuse wherever a string goes (NUL: both engines must answer 400).
NUL_STRINGS = ["a\x00b", "\x00", "name\x00"]
# Strings that may be taken or refused, never a 5xx; when taken they must read back as sent.
ODD_STRINGS = ["", " ", "\x01\x02\x1f", "tab\there", "line\nbreak\r", "\x7f", "\u202eevil",
               "é漢字", "😀", "%00", "%2F..%2F", "' OR 1=1 --", "\\", "\"quoted\"",
               "\u2028", "<script>", "a" * 255]
BAD_UUIDS = ["not-a-uuid", "", "00000000-0000-0000-0000-00000000000g", "%00", "1234",
             "a\x00" + RANDOM_UUID[2:], "{" + RANDOM_UUID + "}x", 42, [], {}]
# neutron-lib converts with bool_from_string(strict=True): "yes", "on", "t", "1" are booleans.
BAD_BOOLS = ["maybe", "yess", 2, -1, [], {}, "", None, "tru"]
BAD_INTS = ["abc", "", [], {}, "1e3x", "0x10"]
BAD_IPS = ["1.2.3.999", "abc", "", "fe80::zz", "1.2.3", 5, [], "10.0.0.1\x00"]
BAD_CIDRS = ["10.0.0.0/33", "abc", "300.1.1.0/24", "", 5, [], "10.0.0.0/-1", "::/129"]
BAD_MACS = ["zz:zz:zz:zz:zz:zz", "00:11:22", "", 5, [], "fa:16:3e:00:00:0\x00"]
PATH_IDS = ["%00", "a%00b", "%25", "%2F", "..", "x" * 300, "%F0%9F%98%80", "%C3%28",
            "00000000-0000-0000-0000-000000000000", "%20", "%0A", "null", "1",
            RANDOM_UUID, RANDOM_UUID.upper(), "%7B%7D"]


def pick(data, pool, default=None):
    """One element of POOL, a list that depends on the server's state. Drawn as an index of
    fixed range so the shape of the draws never depends on that state (hypothesis requires
    it)."""
    i = data.draw(st.integers(0, 63))
    return pool[i % len(pool)] if pool else default


def ipv4(data, net="10.9.0", lo=2, hi=250):
    return f"{net}.{data.draw(st.integers(lo, hi))}"


def cidr24(data):
    return f"10.{data.draw(st.integers(10, 250))}.{data.draw(st.integers(0, 255))}.0/24"


def odd_or_plain(data, plain: str):
    return data.draw(st.sampled_from([plain] + ODD_STRINGS))


# --------------------------------------------------------------------------- per kind


def valid_value(a: A, data, w):
    """A value Neutron accepts for A (semantics may still refuse it: 409, 400 for a
    conflicting combination)."""
    k, o = a.kind, a.opts
    if k == "str":
        return data.draw(st.sampled_from(["fz", "fuzz-" + uuid.uuid4().hex[:6], "x" * 255]))[
            :o.get("max", 255)]
    if k == "project":
        return data.draw(st.sampled_from([w.admin_project, w.other_project]))
    if k == "bool":
        return data.draw(st.sampled_from([True, False, "true", "False", 1, 0]))
    if k == "int":
        return data.draw(st.integers(o.get("lo", 0), o.get("hi", 100)))
    if k == "enum":
        vals = o["values"] + ([None] if o.get("nullable") else [])
        return data.draw(st.sampled_from(vals))
    if k == "ref":
        ids = w.refs(o["ref"])
        choices = ids + ([None] if o.get("nullable") else [])
        return pick(data, choices)
    if k == "ref_list":
        ids = w.refs(o["ref"])
        n = data.draw(st.integers(0, 2))
        return sorted({pick(data, ids) for _ in range(n)} - {None})
    if k == "ip":
        return ipv4(data) if not o.get("nullable") or data.draw(st.booleans()) else None
    if k == "cidr":
        return cidr24(data)
    if k == "cidr_list":
        return [cidr24(data)]
    if k == "ip_list":
        return data.draw(st.lists(st.sampled_from(["192.0.2.53", "2001:db8::53"]),
                                  max_size=2, unique=True))
    if k == "mac":
        return "fa:16:3e:%02x:%02x:%02x" % tuple(data.draw(st.integers(0, 255))
                                                   for _ in range(3))
    if k == "pools":
        a_ = data.draw(st.integers(2, 100))
        return [{"start": f"10.9.0.{a_}", "end": f"10.9.0.{a_ + 20}"}]
    if k == "routes":
        return data.draw(st.sampled_from([[], [{"destination": "192.0.2.0/24",
                                                "nexthop": "10.9.0.254"}]]))
    if k == "fixed_ips":
        return data.draw(st.sampled_from([[], [{"subnet_id": w.subnet}],
                                          [{"ip_address": ipv4(data)}]]))
    if k == "aap":
        return [{"ip_address": ipv4(data, "10.99.0")}]
    if k == "dhcp_opts":
        return [{"opt_name": "mtu", "opt_value": "1400"}]
    if k == "dict":
        return data.draw(st.sampled_from([{}, {"key": "value"}]))
    if k == "gw_info":
        return data.draw(st.sampled_from([{}, {"network_id": w.ext_net},
                                          {"network_id": w.ext_net, "enable_snat": False}]))
    if k == "az_hints":
        return data.draw(st.sampled_from([[], ["nova"]]))
    if k == "protocol":
        return data.draw(st.sampled_from(["tcp", "udp", "icmp", None, "6", 17, "any"]))
    if k == "target":
        return data.draw(st.sampled_from(["*", w.other_project, w.third_project]))
    if k == "str_list":
        return []
    raise AssertionError(f"no valid value for kind {k}")


def invalid_values(a: A, w) -> list[tuple[object, str]]:
    """Every (value, why) of this module that Neutron must refuse for A with a 4xx; WHY
    names the class of mistake (the sweep sends one value of each class). A string with a
    NUL is its own class whatever the attribute's type (PostgreSQL cannot store one)."""
    return [(v, "NUL character" if isinstance(v, str) and "\x00" in v else why)
            for v, why in _invalid_values(a, w)]


def _invalid_values(a: A, w) -> list[tuple[object, str]]:
    k, o = a.kind, a.opts

    def each(values, why):
        return [(v, why) for v in values]

    if k in ("str", "project", "target"):
        m = o.get("max", 255)
        out = each(NUL_STRINGS, "NUL character")
        if not o.get("lenient"):
            out += each(NOT_STR, "not a string") + each(["x" * (m + 1), "x" * 5000],
                                                        f"longer than {m}")
            if not o.get("nullable") and k != "target":
                out.append((None, "null"))
        return out
    if k == "bool":
        return each([v for v in BAD_BOOLS if v is not None or not o.get("nullable")],
                    "not a boolean")
    if k == "int":
        return each(BAD_INTS, "not an integer") + each(o.get("bad", []), "out of range")
    if k == "enum":
        return each(["bogus", 7, [], "\x00", "INGRESS " if "ingress" in o["values"]
                     else "bogus2"], "not one of the values")
    if k == "ref":
        return each([RANDOM_UUID], "unknown reference") + each(BAD_UUIDS, "not a UUID")
    if k == "ref_list":
        return each([[RANDOM_UUID]], "unknown reference") + \
            each(["abc", ["not-a-uuid"], [1], {"a": 1}], "bad UUID list")
    if k == "ip":
        return each(BAD_IPS, "not an IP address")
    if k == "cidr":
        return each(o.get("bad", BAD_CIDRS), "not a CIDR")
    if k == "cidr_list":
        return each(["10.0.0.0/8", [5], ["abc"], ["10.0.0.0/33"], {"a": 1}], "bad CIDR list")
    if k == "ip_list":
        return each(["abc", ["not an ip!"], [5], {"a": 1}], "bad address list")
    if k == "mac":
        return each(BAD_MACS, "not a MAC address")
    if k == "pools":
        return each(["abc", [{"start": "x", "end": "y"}], [{"start": "10.9.0.10"}], [5],
                     [{"start": "10.9.0.20", "end": "10.9.0.10"}]], "bad allocation pools")
    if k == "routes":
        return each(["abc", [{"destination": "x", "nexthop": "10.9.0.1"}],
                     [{"destination": "192.0.2.0/24"}], [5]], "bad routes")
    if k == "fixed_ips":
        return each([[{"subnet_id": RANDOM_UUID}]], "unknown subnet") + \
            each(["abc", [5], [{"subnet_id": "xyz"}], [{"ip_address": "1.2.3.999"}],
                  [{"ip_address": "10.9.0.5\x00"}]], "bad fixed_ips")
    if k == "aap":
        return each(["abc", [{"ip_address": "x"}], [{}],
                     [{"ip_address": "10.0.0.1", "mac_address": "zz"}], [5]],
                    "bad allowed_address_pairs")
    if k == "dhcp_opts":
        return each(["abc", [{"opt_value": "x"}], [5]], "bad extra_dhcp_opts")
    if k == "dict":
        return each(["abc", 5, ["a"]], "not an object")
    if k == "gw_info":
        return each([{"network_id": RANDOM_UUID}], "unknown network") + \
            each(["abc", {"network_id": "xyz"}, {"network_id": w.ext_net, "enable_snat":
                                                  "maybe"}, [1],
                  {"network_id": w.ext_net, "fuzz_key": 1}], "bad external_gateway_info")
    if k == "az_hints":
        return each([["no-such-zone"]], "unknown zone") + \
            each(["abc", [5], ["x" * 300]], "bad availability zone hints")
    if k == "protocol":
        return each(["bogus", 256, -1, [], "\x00"], "bad protocol")
    if k == "str_list":
        return each(["abc", [5]], "bad string list")
    raise AssertionError(f"no invalid value for kind {k}")


def invalid_value(a: A, data, w):
    """One (value, why) that Neutron must refuse for A."""
    return data.draw(st.sampled_from(invalid_values(a, w)))


def one_per_class(a: A, w) -> list[tuple[object, str]]:
    """The first invalid value of each class (the deterministic sweep)."""
    seen, out = set(), []
    for v, why in invalid_values(a, w):
        if why not in seen:
            seen.add(why)
            out.append((v, why))
    return out
