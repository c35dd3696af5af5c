//! API policy enforcement: Neutron's default rules and operator overrides in oslo.policy syntax.
//!
//! This module owns the rule table (Neutron's defaults adapted to our role model, overridden
//! by `[oslo_policy] policy_file`), the check-string parser and the evaluator. It is pure: it
//! must never consult the database, the network or the clock — callers put everything a rule
//! may look at (the resource's attributes plus `network:*`-style keys of parent resources)
//! into the target map. It never panics: malformed files and check strings are rejected at
//! load time with an error naming the file and the rule, and evaluation fails closed.
//!
//! Supported check-string syntax: `@`, `!`, the empty string, `rule:NAME`, `role:NAME`,
//! `field:COLLECTION:ATTR=VALUE` (a `~` value is a regular expression, of which only literal
//! prefixes such as `~^network:` are supported), generic `KEY:VALUE` checks on the caller's
//! credentials with `%(target_key)s` substitution, and `not`, `and`, `or` with parentheses
//! (precedence `not` > `and` > `or`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use neutrino_core::Context;
use serde_json::{Map, Value};

/// Deepest nesting of parentheses and `not` accepted in one check string.
const MAX_NESTING: usize = 64;
/// Longest chain of `rule:` references accepted (guards against runaway recursion).
const MAX_RULE_DEPTH: usize = 64;

/// Neutron's default rules (neutron/conf/policies/*.py for project-scoped tokens), with the
/// repeated `ADMIN_OR_PROJECT_*` strings expressed through named helper rules so operators can
/// override them in one place.
const DEFAULT_RULES: &[(&str, &str)] = &[
    // Base rules.
    ("context_is_admin", "role:admin"),
    ("context_with_global_access", "!"),
    ("service_api", "role:service"),
    ("owner", "project_id:%(project_id)s"),
    ("admin_or_owner", "rule:context_is_admin or rule:owner"),
    ("context_is_advsvc", "role:advsvc"),
    (
        "admin_or_network_owner",
        "rule:context_is_admin or project_id:%(network:project_id)s",
    ),
    (
        "admin_owner_or_network_owner",
        "rule:owner or rule:admin_or_network_owner",
    ),
    ("network_owner", "project_id:%(network:project_id)s"),
    ("admin_only", "rule:context_is_admin"),
    ("regular_user", ""),
    ("shared", "field:networks:shared=True"),
    ("external", "field:networks:router:external=True"),
    ("default", "rule:admin_or_owner"),
    (
        "admin_or_ext_parent_owner",
        "rule:context_is_admin or project_id:%(ext_parent:project_id)s",
    ),
    ("ext_parent_owner", "project_id:%(ext_parent:project_id)s"),
    ("sg_owner", "project_id:%(security_group:project_id)s"),
    (
        "project_manager",
        "role:manager and project_id:%(project_id)s",
    ),
    (
        "project_member",
        "role:member and project_id:%(project_id)s",
    ),
    (
        "project_reader",
        "role:reader and project_id:%(project_id)s",
    ),
    (
        "admin_or_project_manager",
        "rule:admin_only or rule:project_manager",
    ),
    (
        "admin_or_project_member",
        "rule:admin_only or rule:project_member",
    ),
    (
        "admin_or_project_reader",
        "rule:admin_only or rule:project_reader",
    ),
    // Networks.
    ("create_network", "rule:admin_or_project_member"),
    ("create_network:shared", "rule:admin_only"),
    ("create_network:router:external", "rule:admin_only"),
    ("create_network:is_default", "rule:admin_only"),
    (
        "create_network:port_security_enabled",
        "rule:admin_or_project_member",
    ),
    ("create_network:segments", "rule:admin_only"),
    ("create_network:provider:network_type", "rule:admin_only"),
    (
        "create_network:provider:physical_network",
        "rule:admin_only",
    ),
    ("create_network:provider:segmentation_id", "rule:admin_only"),
    ("create_network:tags", "rule:admin_or_project_member"),
    (
        "get_network",
        "rule:admin_or_project_reader or rule:service_api or rule:shared or rule:external \
         or rule:context_is_advsvc",
    ),
    ("get_network:router:external", "@"),
    ("get_network:segments", "rule:admin_only"),
    ("get_network:provider:network_type", "rule:admin_only"),
    ("get_network:provider:physical_network", "rule:admin_only"),
    ("get_network:provider:segmentation_id", "rule:admin_only"),
    (
        "get_network:tags",
        "rule:admin_or_project_reader or rule:shared or rule:external \
         or rule:context_is_advsvc",
    ),
    ("update_network", "rule:admin_or_project_member"),
    ("update_network:segments", "rule:admin_only"),
    ("update_network:shared", "rule:admin_only"),
    ("update_network:provider:network_type", "rule:admin_only"),
    (
        "update_network:provider:physical_network",
        "rule:admin_only",
    ),
    ("update_network:provider:segmentation_id", "rule:admin_only"),
    ("update_network:router:external", "rule:admin_only"),
    ("update_network:is_default", "rule:admin_only"),
    (
        "update_network:port_security_enabled",
        "rule:admin_or_project_member",
    ),
    ("update_network:tags", "rule:admin_or_project_member"),
    ("delete_network", "rule:admin_or_project_member"),
    ("delete_network:tags", "rule:admin_or_project_member"),
    // Subnets.
    ("external_network", "field:subnets:router:external=True"),
    (
        "create_subnet",
        "(rule:admin_only) or (role:member and rule:network_owner)",
    ),
    ("create_subnet:segment_id", "rule:admin_only"),
    ("create_subnet:service_types", "rule:admin_only"),
    (
        "create_subnet:tags",
        "rule:project_member or (rule:admin_only) or (role:member and rule:network_owner)",
    ),
    (
        "get_subnet",
        "rule:project_reader or rule:shared or rule:external_network or (rule:admin_only) \
         or (role:reader and rule:network_owner) or rule:service_api",
    ),
    ("get_subnet:segment_id", "rule:admin_only"),
    (
        "get_subnet:tags",
        "rule:project_reader or rule:shared or rule:external_network or (rule:admin_only) \
         or (role:reader and rule:network_owner)",
    ),
    (
        "update_subnet",
        "rule:project_member or (rule:admin_only) or (role:member and rule:network_owner)",
    ),
    ("update_subnet:segment_id", "rule:admin_only"),
    ("update_subnet:service_types", "rule:admin_only"),
    (
        "update_subnet:tags",
        "rule:project_member or (rule:admin_only) or (role:member and rule:network_owner)",
    ),
    (
        "delete_subnet",
        "rule:project_member or (rule:admin_only) or (role:member and rule:network_owner)",
    ),
    (
        "delete_subnet:tags",
        "rule:project_member or (rule:admin_only) or (role:member and rule:network_owner)",
    ),
    // Subnet pools.
    ("shared_subnetpools", "field:subnetpools:shared=True"),
    ("create_subnetpool", "rule:admin_or_project_member"),
    ("create_subnetpool:shared", "rule:admin_only"),
    ("create_subnetpool:is_default", "rule:admin_only"),
    ("create_subnetpool:tags", "rule:admin_or_project_member"),
    (
        "get_subnetpool",
        "rule:admin_or_project_reader or rule:shared_subnetpools",
    ),
    (
        "get_subnetpool:tags",
        "rule:admin_or_project_reader or rule:shared_subnetpools",
    ),
    ("update_subnetpool", "rule:admin_or_project_member"),
    ("update_subnetpool:is_default", "rule:admin_only"),
    ("update_subnetpool:tags", "rule:admin_or_project_member"),
    ("delete_subnetpool", "rule:admin_or_project_member"),
    ("delete_subnetpool:tags", "rule:admin_or_project_member"),
    ("onboard_network_subnets", "rule:admin_or_project_member"),
    ("add_prefixes", "rule:admin_or_project_member"),
    ("remove_prefixes", "rule:admin_or_project_member"),
    // Address scopes.
    ("shared_address_groups", "field:address_groups:shared=True"),
    ("create_address_group", "rule:admin_or_project_member"),
    (
        "get_address_group",
        "rule:admin_or_project_reader or rule:shared_address_groups",
    ),
    ("update_address_group", "rule:admin_or_project_member"),
    ("delete_address_group", "rule:admin_or_project_member"),
    ("add_addresses", "rule:admin_or_project_member"),
    ("remove_addresses", "rule:admin_or_project_member"),
    ("shared_address_scopes", "field:address_scopes:shared=True"),
    ("create_address_scope", "rule:admin_or_project_member"),
    ("create_address_scope:shared", "rule:admin_only"),
    (
        "get_address_scope",
        "rule:admin_or_project_reader or rule:shared_address_scopes",
    ),
    ("update_address_scope", "rule:admin_or_project_member"),
    ("update_address_scope:shared", "rule:admin_only"),
    ("delete_address_scope", "rule:admin_or_project_member"),
    // Ports.
    ("network_device", "field:port:device_owner=~^network:"),
    (
        "admin_or_data_plane_int",
        "rule:context_is_admin or role:data_plane_integrator",
    ),
    (
        "create_port",
        "(rule:admin_only) or (rule:service_api) or role:member and rule:network_owner \
         or rule:shared",
    ),
    (
        "create_port:device_id",
        "rule:admin_or_project_member or rule:service_api",
    ),
    (
        "create_port:device_owner",
        "not rule:network_device or (rule:admin_only) or (rule:service_api) \
         or role:member and rule:network_owner",
    ),
    (
        "create_port:mac_address",
        "(rule:admin_only) or (rule:service_api) or role:member and rule:network_owner",
    ),
    (
        "create_port:fixed_ips",
        "(rule:admin_only) or (rule:service_api) or role:member and rule:network_owner \
         or rule:shared",
    ),
    (
        "create_port:fixed_ips:ip_address",
        "(rule:admin_only) or (rule:service_api) or role:member and rule:network_owner",
    ),
    (
        "create_port:fixed_ips:subnet_id",
        "(rule:admin_only) or (rule:service_api) or role:member and rule:network_owner \
         or rule:shared",
    ),
    (
        "create_port:port_security_enabled",
        "(rule:admin_only) or (rule:service_api) or role:member and rule:network_owner",
    ),
    (
        "create_port:binding:host_id",
        "(rule:admin_only) or (rule:service_api)",
    ),
    ("create_port:binding:profile", "rule:service_api"),
    (
        "create_port:binding:vnic_type",
        "rule:admin_or_project_member or rule:service_api",
    ),
    (
        "create_port:allowed_address_pairs",
        "(rule:admin_only) or (role:member and rule:network_owner) or rule:service_api",
    ),
    (
        "create_port:allowed_address_pairs:mac_address",
        "(rule:admin_only) or (role:member and rule:network_owner) or rule:service_api",
    ),
    (
        "create_port:allowed_address_pairs:ip_address",
        "(rule:admin_only) or (role:member and rule:network_owner) or rule:service_api",
    ),
    ("create_port:hints", "rule:admin_only"),
    ("create_port:trusted", "rule:admin_only"),
    (
        "create_port:tags",
        "rule:admin_or_project_member or rule:context_is_advsvc",
    ),
    (
        "get_port",
        "(rule:admin_only) or (rule:service_api) or role:reader and rule:network_owner \
         or rule:project_reader",
    ),
    (
        "get_port:binding:vif_type",
        "(rule:admin_only) or (rule:service_api)",
    ),
    (
        "get_port:binding:vif_details",
        "(rule:admin_only) or (rule:service_api)",
    ),
    (
        "get_port:binding:host_id",
        "(rule:admin_only) or (rule:service_api)",
    ),
    (
        "get_port:binding:profile",
        "(rule:admin_only) or (rule:service_api)",
    ),
    ("get_port:resource_request", "rule:admin_only"),
    ("get_port:hints", "rule:admin_only"),
    ("get_port:trusted", "rule:admin_only"),
    (
        "get_port:tags",
        "rule:context_is_advsvc or (rule:admin_only) or (role:reader and rule:network_owner) \
         or rule:project_reader",
    ),
    (
        "update_port",
        "(rule:admin_only) or (rule:service_api) or rule:project_member",
    ),
    (
        "update_port:device_id",
        "rule:admin_or_project_member or rule:service_api",
    ),
    (
        "update_port:device_owner",
        "not rule:network_device or (rule:admin_only) or (rule:service_api) \
         or role:member and rule:network_owner",
    ),
    (
        "update_port:mac_address",
        "(rule:admin_only) or (rule:service_api) or role:manager and rule:network_owner",
    ),
    (
        "update_port:fixed_ips",
        "(rule:admin_only) or (rule:service_api) or role:member and rule:network_owner",
    ),
    (
        "update_port:fixed_ips:ip_address",
        "(rule:admin_only) or (rule:service_api) or role:member and rule:network_owner",
    ),
    (
        "update_port:fixed_ips:subnet_id",
        "(rule:admin_only) or (rule:service_api) or role:member and rule:network_owner \
         or rule:shared",
    ),
    (
        "update_port:port_security_enabled",
        "(rule:admin_only) or (rule:service_api) or role:member and rule:network_owner",
    ),
    (
        "update_port:binding:host_id",
        "(rule:admin_only) or (rule:service_api)",
    ),
    ("update_port:binding:profile", "rule:service_api"),
    (
        "update_port:binding:vnic_type",
        "(rule:admin_only) or (rule:service_api) or rule:project_member",
    ),
    (
        "update_port:allowed_address_pairs",
        "(rule:admin_only) or (role:member and rule:network_owner) or rule:service_api",
    ),
    (
        "update_port:allowed_address_pairs:mac_address",
        "(rule:admin_only) or (role:member and rule:network_owner) or rule:service_api",
    ),
    (
        "update_port:allowed_address_pairs:ip_address",
        "(rule:admin_only) or (role:member and rule:network_owner) or rule:service_api",
    ),
    (
        "update_port:data_plane_status",
        "rule:admin_only or role:data_plane_integrator",
    ),
    ("update_port:hints", "rule:admin_only"),
    ("update_port:trusted", "rule:admin_only"),
    (
        "update_port:tags",
        "rule:admin_or_project_member or rule:context_is_advsvc",
    ),
    (
        "delete_port",
        "(rule:admin_only) or (rule:service_api) or role:member and rule:network_owner \
         or rule:project_member",
    ),
    (
        "delete_port:tags",
        "rule:context_is_advsvc or rule:project_member or (rule:admin_only) \
         or (role:member and rule:network_owner)",
    ),
    // Quotas.
    ("get_quota", "rule:admin_or_project_manager"),
    ("update_quota", "rule:admin_only"),
    ("delete_quota", "rule:admin_only"),
    // Security groups and their rules.
    (
        "admin_or_sg_owner",
        "rule:context_is_admin or project_id:%(security_group:project_id)s",
    ),
    (
        "admin_owner_or_sg_owner",
        "rule:owner or rule:admin_or_sg_owner",
    ),
    ("shared_security_group", "field:security_groups:shared=True"),
    (
        "rule_default_sg",
        "field:security_group_rules:belongs_to_default_sg=True",
    ),
    ("create_security_group", "rule:admin_or_project_member"),
    ("create_security_group:tags", "rule:admin_or_project_member"),
    (
        "get_security_group",
        "rule:admin_or_project_reader or rule:shared_security_group",
    ),
    (
        "get_security_group:tags",
        "rule:admin_or_project_reader or rule:shared_security_group",
    ),
    ("update_security_group", "rule:admin_or_project_member"),
    ("update_security_group:tags", "rule:admin_or_project_member"),
    ("delete_security_group", "rule:admin_or_project_member"),
    ("delete_security_group:tags", "rule:admin_or_project_member"),
    (
        "create_security_group_rule",
        "(rule:admin_only) or (role:member and rule:sg_owner)",
    ),
    (
        "get_security_group_rule",
        "(rule:admin_only) or (role:reader and rule:sg_owner)",
    ),
    (
        "delete_security_group_rule",
        "(rule:admin_only) or (role:member and rule:sg_owner)",
    ),
    // RBAC policies.
    (
        "restrict_wildcard",
        "(not field:rbac_policy:target_tenant=* and not field:rbac_policy:target_project=*) \
         or rule:admin_only",
    ),
    ("create_rbac_policy", "rule:admin_or_project_member"),
    (
        "create_rbac_policy:target_tenant",
        "rule:admin_only or (not field:rbac_policy:target_tenant=* \
         and not field:rbac_policy:target_project=*)",
    ),
    (
        "create_rbac_policy:target_project",
        "rule:admin_only or not field:rbac_policy:target_project=*",
    ),
    ("update_rbac_policy", "rule:admin_or_project_member"),
    (
        "update_rbac_policy:target_tenant",
        "rule:admin_only or (not field:rbac_policy:target_tenant=* \
         and not field:rbac_policy:target_project=*)",
    ),
    (
        "update_rbac_policy:target_project",
        "rule:admin_only or not field:rbac_policy:target_project=*",
    ),
    ("get_rbac_policy", "rule:admin_or_project_reader"),
    ("delete_rbac_policy", "rule:admin_or_project_member"),
    // Routers.
    ("create_router", "rule:admin_or_project_member"),
    ("create_router:distributed", "rule:admin_only"),
    ("create_router:ha", "rule:admin_only"),
    (
        "create_router:external_gateway_info",
        "rule:admin_or_project_member",
    ),
    (
        "create_router:external_gateway_info:network_id",
        "rule:admin_or_project_member",
    ),
    (
        "create_router:external_gateway_info:enable_snat",
        "rule:admin_only",
    ),
    (
        "create_router:external_gateway_info:external_fixed_ips",
        "rule:admin_only",
    ),
    ("create_router:enable_default_route_bfd", "rule:admin_only"),
    ("create_router:enable_default_route_ecmp", "rule:admin_only"),
    ("create_router:tags", "rule:admin_or_project_member"),
    ("get_router", "rule:admin_or_project_reader"),
    ("get_router:distributed", "rule:admin_only"),
    ("get_router:ha", "rule:admin_only"),
    ("get_router:tags", "rule:admin_or_project_reader"),
    ("update_router", "rule:admin_or_project_member"),
    ("update_router:distributed", "rule:admin_only"),
    ("update_router:ha", "rule:admin_only"),
    (
        "update_router:external_gateway_info",
        "rule:admin_or_project_member",
    ),
    (
        "update_router:external_gateway_info:network_id",
        "rule:admin_or_project_member",
    ),
    (
        "update_router:external_gateway_info:enable_snat",
        "rule:admin_only",
    ),
    (
        "update_router:external_gateway_info:external_fixed_ips",
        "rule:admin_only",
    ),
    ("update_router:enable_default_route_bfd", "rule:admin_only"),
    ("update_router:enable_default_route_ecmp", "rule:admin_only"),
    ("update_router:tags", "rule:admin_or_project_member"),
    ("delete_router", "rule:admin_or_project_member"),
    ("delete_router:tags", "rule:admin_or_project_member"),
    ("add_router_interface", "rule:admin_or_project_member"),
    ("remove_router_interface", "rule:admin_or_project_member"),
    ("add_extraroutes", "rule:admin_or_project_member"),
    ("remove_extraroutes", "rule:admin_or_project_member"),
    // Floating IPs.
    ("create_floatingip", "rule:admin_or_project_member"),
    (
        "create_floatingip:floating_ip_address",
        "rule:admin_or_project_manager",
    ),
    ("create_floatingip:tags", "rule:admin_or_project_member"),
    ("get_floatingip", "rule:admin_or_project_reader"),
    ("get_floatingip:tags", "rule:admin_or_project_reader"),
    ("update_floatingip", "rule:admin_or_project_member"),
    ("update_floatingip:tags", "rule:admin_or_project_member"),
    ("delete_floatingip", "rule:admin_or_project_member"),
    ("delete_floatingip:tags", "rule:admin_or_project_member"),
    // Port forwardings of floating IPs (neutron/conf/policies/floatingip_port_forwarding.py):
    // the parent floating IP's project decides (`ext_parent`).
    (
        "create_floatingip_port_forwarding",
        "(rule:admin_only) or (role:member and rule:ext_parent_owner)",
    ),
    (
        "get_floatingip_port_forwarding",
        "(rule:admin_only) or (role:reader and rule:ext_parent_owner)",
    ),
    (
        "update_floatingip_port_forwarding",
        "(rule:admin_only) or (role:member and rule:ext_parent_owner)",
    ),
    (
        "delete_floatingip_port_forwarding",
        "(rule:admin_only) or (role:member and rule:ext_parent_owner)",
    ),
    // Agents and their schedulers.
    ("create_agent", "rule:admin_only"),
    ("get_agent", "rule:admin_only"),
    ("update_agent", "rule:admin_only"),
    ("delete_agent", "rule:admin_only"),
    ("create_dhcp-network", "rule:admin_only"),
    ("get_dhcp-networks", "rule:admin_only"),
    ("delete_dhcp-network", "rule:admin_only"),
    ("create_l3-router", "rule:admin_only"),
    ("get_l3-routers", "rule:admin_only"),
    ("update_l3-router", "rule:admin_only"),
    ("delete_l3-router", "rule:admin_only"),
    ("get_dhcp-agents", "rule:admin_only"),
    ("get_l3-agents", "rule:admin_only"),
    // Segments and miscellaneous read-only APIs.
    ("create_segment", "rule:admin_only"),
    ("get_segment", "rule:admin_only"),
    ("update_segment", "rule:admin_only"),
    ("delete_segment", "rule:admin_only"),
    ("get_availability_zone", "role:reader"),
    (
        "get_network_ip_availability",
        "(rule:admin_only) or (rule:service_api)",
    ),
    ("get_service_provider", "role:reader"),
    // Instance data for the metadata service (neutrino's /v2.0/instance-metadata).
    ("create_instance_metadata", "rule:admin_or_project_member"),
    ("get_instance_metadata", "rule:admin_or_project_reader"),
    ("update_instance_metadata", "rule:admin_or_project_member"),
    ("delete_instance_metadata", "rule:admin_or_project_member"),
];

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {}: {source}", .path.display())]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is neither a JSON object nor a YAML mapping of strings.
    #[error("policy file {}: line {line}: {message}", .path.display())]
    Syntax {
        /// The policy file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A rule's check string is invalid (or rules reference each other in a cycle).
    #[error("policy file {}: rule \"{rule}\": {message}", .path.display())]
    Rule {
        /// The policy file.
        path: PathBuf,
        /// Name of the offending rule.
        rule: String,
        /// What is wrong.
        message: String,
    },
}

/// A compiled rule table.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: HashMap<String, CompiledRule>,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    /// The check string as written (kept for diagnostics).
    #[allow(dead_code)]
    source: String,
    expr: Expr,
}

/// A parsed check string.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Always,
    Never,
    Rule(String),
    Role(Template),
    Generic { kind: Credential, value: Template },
    Field(FieldCheck),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

/// The left-hand side of a generic `KEY:VALUE` check.
#[derive(Debug, Clone, PartialEq)]
enum Credential {
    ProjectId,
    UserId,
    UserName,
    ProjectName,
    DomainId,
    IsAdmin,
    SystemScope,
    Roles,
    /// A quoted string or `True`/`False` compared with the (substituted) value.
    Literal(String),
    /// Anything else: oslo.policy evaluates a missing credential to false.
    Unknown,
}

/// A value with `%(key)s` substitutions from the target.
#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Key(String),
}

#[derive(Debug, Clone, PartialEq)]
struct FieldCheck {
    collection: String,
    attr: String,
    expected: FieldMatch,
}

#[derive(Debug, Clone, PartialEq)]
enum FieldMatch {
    /// Literal value; booleans compare case-insensitively with `True`/`False`.
    Literal(String),
    /// `=~^prefix` (or `=~^prefix.*`).
    Prefix(String),
    /// `=~^text$`.
    Exact(String),
}

/// Evaluation gave up (rule references nested beyond [`MAX_RULE_DEPTH`]); fails closed.
struct TooDeep;

impl Policy {
    /// Neutron's default rules.
    pub fn defaults() -> Policy {
        let mut rules = HashMap::with_capacity(DEFAULT_RULES.len());
        for (name, source) in DEFAULT_RULES {
            // The defaults are covered by a test; should one ever fail to parse, deny rather
            // than panic.
            let expr = parse_check_string(source).unwrap_or(Expr::Never);
            rules.insert(
                (*name).to_string(),
                CompiledRule {
                    source: (*source).to_string(),
                    expr,
                },
            );
        }
        Policy { rules }
    }

    /// Defaults overridden by the rules in `path` (YAML "key": "value" lines, or a JSON object). Unknown syntax → Err naming the rule.
    pub fn load(path: Option<&Path>) -> Result<Policy, PolicyError> {
        let mut policy = Policy::defaults();
        let Some(path) = path else {
            return Ok(policy);
        };
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let entries = parse_policy_file(&text).map_err(|e| match e {
            FileError::Syntax { line, message } => PolicyError::Syntax {
                path: path.to_path_buf(),
                line,
                message,
            },
            FileError::Rule { rule, message } => PolicyError::Rule {
                path: path.to_path_buf(),
                rule,
                message,
            },
        })?;
        for (name, source) in entries {
            let expr = parse_check_string(&source).map_err(|message| PolicyError::Rule {
                path: path.to_path_buf(),
                rule: name.clone(),
                message,
            })?;
            policy.rules.insert(name, CompiledRule { source, expr });
        }
        if let Some((rule, message)) = policy.find_reference_problem() {
            return Err(PolicyError::Rule {
                path: path.to_path_buf(),
                rule,
                message,
            });
        }
        Ok(policy)
    }

    /// Evaluates rule `action` (e.g. "create_network", "get_network:provider:network_type"). If the action has no rule: for attribute rules ("action:attr") return true; otherwise use rule "default" (default: "rule:admin_or_owner").
    pub fn check(&self, ctx: &Context, action: &str, target: &Map<String, Value>) -> bool {
        let rule = match self.rules.get(action) {
            Some(rule) => rule,
            None if action.contains(':') => return true,
            None => match self.rules.get("default") {
                Some(rule) => rule,
                None => return false,
            },
        };
        self.eval(&rule.expr, ctx, target, 0).unwrap_or(false)
    }

    /// Whether an action has an explicit rule (used to decide which attributes are policy-controlled).
    pub fn has_rule(&self, action: &str) -> bool {
        self.rules.contains_key(action)
    }

    fn eval(
        &self,
        expr: &Expr,
        ctx: &Context,
        target: &Map<String, Value>,
        depth: usize,
    ) -> Result<bool, TooDeep> {
        Ok(match expr {
            Expr::Always => true,
            Expr::Never => false,
            Expr::Rule(name) => {
                if depth >= MAX_RULE_DEPTH {
                    return Err(TooDeep);
                }
                match self.rules.get(name) {
                    Some(rule) => self.eval(&rule.expr, ctx, target, depth + 1)?,
                    None => false,
                }
            }
            Expr::Role(template) => match template.render(target) {
                Some(role) => has_role(ctx, &role.to_lowercase()),
                None => false,
            },
            Expr::Generic { kind, value } => match value.render(target) {
                Some(value) => credential_matches(ctx, kind, &value),
                None => false,
            },
            Expr::Field(field) => field.matches(target),
            Expr::Not(inner) => !self.eval(inner, ctx, target, depth)?,
            Expr::And(items) => {
                for item in items {
                    if !self.eval(item, ctx, target, depth)? {
                        return Ok(false);
                    }
                }
                true
            }
            Expr::Or(items) => {
                for item in items {
                    if self.eval(item, ctx, target, depth)? {
                        return Ok(true);
                    }
                }
                false
            }
        })
    }

    /// A rule that takes part in a reference cycle or starts a chain of references deeper than
    /// [`MAX_RULE_DEPTH`], with a message; rules are visited in name order.
    fn find_reference_problem(&self) -> Option<(String, String)> {
        const VISITING: u8 = 1;
        const DONE: u8 = 2;
        let mut names: Vec<&str> = self.rules.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut state: HashMap<&str, u8> = HashMap::new();
        for start in names {
            if state.contains_key(start) {
                continue;
            }
            state.insert(start, VISITING);
            let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, self.references(start))];
            while let Some((node, mut children)) = stack.pop() {
                let Some(child) = children.pop() else {
                    state.insert(node, DONE);
                    continue;
                };
                stack.push((node, children));
                if !self.rules.contains_key(child) {
                    continue;
                }
                match state.get(child) {
                    Some(&VISITING) => {
                        return Some((
                            child.to_string(),
                            format!("rule references form a cycle (through \"{node}\")"),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        if stack.len() >= MAX_RULE_DEPTH {
                            return Some((
                                start.to_string(),
                                format!("rule references nested more than {MAX_RULE_DEPTH} deep"),
                            ));
                        }
                        state.insert(child, VISITING);
                        stack.push((child, self.references(child)));
                    }
                }
            }
        }
        None
    }

    /// Names referenced with `rule:` by rule `name`, in reverse order of appearance.
    fn references(&self, name: &str) -> Vec<&str> {
        let mut out = Vec::new();
        if let Some(rule) = self.rules.get(name) {
            collect_references(&rule.expr, &mut out);
        }
        out.reverse();
        out
    }
}

fn collect_references<'a>(expr: &'a Expr, out: &mut Vec<&'a str>) {
    match expr {
        Expr::Rule(name) => out.push(name),
        Expr::Not(inner) => collect_references(inner, out),
        Expr::And(items) | Expr::Or(items) => {
            for item in items {
                collect_references(item, out);
            }
        }
        Expr::Always | Expr::Never | Expr::Role(_) | Expr::Generic { .. } | Expr::Field(_) => {}
    }
}

/// `role:NAME` under our role model: admin ⊃ member ⊃ reader, other roles by name.
fn has_role(ctx: &Context, role: &str) -> bool {
    match role {
        "admin" => ctx.is_admin(),
        "member" => ctx.is_member(),
        "reader" => ctx.is_reader(),
        other => ctx.roles.iter().any(|r| r == other),
    }
}

/// Compares a string credential; empty or absent credentials never match.
fn nonempty_eq(credential: Option<&str>, value: &str) -> bool {
    matches!(credential, Some(c) if !c.is_empty() && c == value)
}

fn bool_matches(actual: bool, value: &str) -> bool {
    value.eq_ignore_ascii_case(if actual { "true" } else { "false" })
}

fn credential_matches(ctx: &Context, kind: &Credential, value: &str) -> bool {
    match kind {
        Credential::ProjectId => nonempty_eq(ctx.project_id.as_deref(), value),
        Credential::UserId => nonempty_eq(Some(&ctx.user_id), value),
        Credential::UserName => nonempty_eq(Some(&ctx.user_name), value),
        Credential::ProjectName => nonempty_eq(ctx.project_name.as_deref(), value),
        Credential::DomainId => nonempty_eq(ctx.domain_id.as_deref(), value),
        Credential::IsAdmin => bool_matches(ctx.is_admin(), value),
        Credential::SystemScope => ctx.system_scope && value == "all",
        Credential::Roles => ctx.roles.iter().any(|r| *r == value.to_lowercase()),
        Credential::Literal(literal) => literal == value,
        Credential::Unknown => false,
    }
}

/// The other spelling of an owner key (`project_id` ⇄ `tenant_id`, also after a `parent:`).
fn owner_alias(key: &str) -> Option<String> {
    let (prefix, last) = match key.rsplit_once(':') {
        Some((prefix, last)) => (Some(prefix), last),
        None => (None, key),
    };
    let other = match last {
        "project_id" => "tenant_id",
        "tenant_id" => "project_id",
        _ => return None,
    };
    Some(match prefix {
        Some(prefix) => format!("{prefix}:{other}"),
        None => other.to_string(),
    })
}

/// A target value rendered as oslo.policy would (`str()`); null, lists and maps are absent.
fn target_string(target: &Map<String, Value>, key: &str) -> Option<String> {
    let value = match target.get(key) {
        Some(v) if !v.is_null() => v,
        _ => {
            let alias = owner_alias(key)?;
            target.get(&alias).filter(|v| !v.is_null())?
        }
    };
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(true) => Some("True".to_string()),
        Value::Bool(false) => Some("False".to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(pos) = rest.find('%') {
            literal.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                literal.push('%');
                rest = tail;
            } else if let Some(inner) = after.strip_prefix('(') {
                let Some(close) = inner.find(")s") else {
                    return Err(format!(
                        "invalid substitution in {text:?} (expected %(name)s)"
                    ));
                };
                let key = &inner[..close];
                if key.is_empty() {
                    return Err(format!("empty substitution in {text:?}"));
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Key(key.to_string()));
                rest = &inner[close + 2..];
            } else {
                return Err(format!(
                    "invalid '%' in {text:?} (use %(name)s, or %% for a literal '%')"
                ));
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    /// The value with substitutions made, or None when a substituted key is absent.
    fn render(&self, target: &Map<String, Value>) -> Option<String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Key(key) => out.push_str(&target_string(target, key)?),
            }
        }
        Some(out)
    }
}

impl FieldCheck {
    fn parse(spec: &str) -> Result<FieldCheck, String> {
        let bad = || {
            format!(
                "invalid field check \"field:{spec}\" (expected field:collection:attribute=value)"
            )
        };
        let (collection, rest) = spec.split_once(':').ok_or_else(bad)?;
        let (attr, value) = rest.split_once('=').ok_or_else(bad)?;
        if collection.is_empty() || attr.is_empty() {
            return Err(bad());
        }
        let expected = match value.strip_prefix('~') {
            Some(pattern) => parse_regex(pattern)?,
            None => FieldMatch::Literal(value.to_string()),
        };
        Ok(FieldCheck {
            collection: collection.to_string(),
            attr: attr.to_string(),
            expected,
        })
    }

    fn target_value<'a>(&self, target: &'a Map<String, Value>) -> Option<&'a Value> {
        let parent_key = format!("network:{}", self.attr);
        let present = |v: &&Value| !v.is_null();
        if self.collection == "networks" {
            let is_child = target.contains_key("network:project_id")
                || target.contains_key("network:tenant_id");
            if is_child {
                return target.get(&parent_key).filter(present);
            }
            return target.get(&self.attr).filter(present);
        }
        // Subnets inherit network attributes such as router:external.
        target.get(&self.attr).filter(present).or_else(|| {
            if self.collection == "subnets" {
                target.get(&parent_key).filter(present)
            } else {
                None
            }
        })
    }

    fn matches(&self, target: &Map<String, Value>) -> bool {
        let Some(actual) = self.target_value(target) else {
            return false;
        };
        match (&self.expected, actual) {
            (FieldMatch::Literal(expected), Value::Bool(b)) => bool_matches(*b, expected),
            (FieldMatch::Literal(expected), Value::String(s)) => s == expected,
            (FieldMatch::Literal(expected), Value::Number(n)) => n.to_string() == *expected,
            (FieldMatch::Prefix(prefix), Value::String(s)) => s.starts_with(prefix.as_str()),
            (FieldMatch::Exact(text), Value::String(s)) => s == text,
            _ => false,
        }
    }
}

/// The supported subset of Python's `re.match` patterns: an optional `^`, literal characters
/// (metacharacters escaped with `\`), then an optional `.*` or `$`.
fn parse_regex(pattern: &str) -> Result<FieldMatch, String> {
    let body = pattern.strip_prefix('^').unwrap_or(pattern);
    let (body, exact) = if let Some(b) = body.strip_suffix(".*") {
        (b, false)
    } else if let Some(b) = body.strip_suffix('$') {
        // A trailing "\$" is an escaped literal dollar, not an anchor.
        if b.ends_with('\\') && !b.ends_with("\\\\") {
            (body, false)
        } else {
            (b, true)
        }
    } else {
        (body, false)
    };
    let mut text = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) if !escaped.is_ascii_alphanumeric() => text.push(escaped),
                _ => {
                    return Err(format!(
                        "unsupported regular expression {pattern:?} (only literal prefixes like ~^network: are supported)"
                    ));
                }
            },
            '.' | '^' | '$' | '*' | '+' | '?' | '{' | '}' | '[' | ']' | '|' | '(' | ')' => {
                return Err(format!(
                    "unsupported regular expression {pattern:?} (only literal prefixes like ~^network: are supported)"
                ));
            }
            other => text.push(other),
        }
    }
    Ok(if exact {
        FieldMatch::Exact(text)
    } else {
        FieldMatch::Prefix(text)
    })
}

// ----- check-string parser -------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    Check(String),
}

/// Splits a check string the way oslo.policy does: on whitespace, peeling parentheses off the
/// start and end of each word.
fn tokenize(rule: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    for word in rule.split_whitespace() {
        let trimmed = word.trim_start_matches('(');
        for _ in 0..(word.len() - trimmed.len()) {
            tokens.push(Token::Open);
        }
        if trimmed.is_empty() {
            continue;
        }
        let clean = trimmed.trim_end_matches(')');
        let trailing = trimmed.len() - clean.len();
        if !clean.is_empty() {
            tokens.push(match clean.to_ascii_lowercase().as_str() {
                "and" => Token::And,
                "or" => Token::Or,
                "not" => Token::Not,
                _ => Token::Check(clean.to_string()),
            });
        }
        for _ in 0..trailing {
            tokens.push(Token::Close);
        }
    }
    tokens
}

fn describe(token: Option<&Token>) -> String {
    match token {
        None => "end of rule".to_string(),
        Some(Token::Open) => "'('".to_string(),
        Some(Token::Close) => "')'".to_string(),
        Some(Token::And) => "'and'".to_string(),
        Some(Token::Or) => "'or'".to_string(),
        Some(Token::Not) => "'not'".to_string(),
        Some(Token::Check(c)) => format!("{c:?}"),
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    nesting: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        if token.is_some() {
            self.pos += 1;
        }
        token
    }

    fn enter(&mut self) -> Result<(), String> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(format!(
                "parentheses and 'not' nested more than {MAX_NESTING} deep"
            ));
        }
        Ok(())
    }

    fn or_expr(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.and_expr()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            items.push(self.and_expr()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Never)
        } else {
            Expr::Or(items)
        })
    }

    fn and_expr(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.not_expr()?];
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            items.push(self.not_expr()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Never)
        } else {
            Expr::And(items)
        })
    }

    fn not_expr(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            self.enter()?;
            let inner = self.not_expr()?;
            self.nesting -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Token::Open) => {
                self.enter()?;
                let inner = self.or_expr()?;
                match self.next() {
                    Some(Token::Close) => {}
                    other => {
                        return Err(format!(
                            "expected ')' but found {}",
                            describe(other.as_ref())
                        ));
                    }
                }
                self.nesting -= 1;
                Ok(inner)
            }
            Some(Token::Check(text)) => parse_check(&text),
            other => Err(format!(
                "expected a check but found {}",
                describe(other.as_ref())
            )),
        }
    }
}

/// Compiles one check string.
fn parse_check_string(rule: &str) -> Result<Expr, String> {
    let tokens = tokenize(rule);
    if tokens.is_empty() {
        return Ok(Expr::Always);
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        nesting: 0,
    };
    let expr = parser.or_expr()?;
    if parser.pos < parser.tokens.len() {
        return Err(format!(
            "unexpected {} after a complete expression",
            describe(parser.peek())
        ));
    }
    Ok(expr)
}

/// Compiles one check (a single word such as `role:admin`).
fn parse_check(text: &str) -> Result<Expr, String> {
    match text {
        "@" => return Ok(Expr::Always),
        "!" => return Ok(Expr::Never),
        _ => {}
    }
    let Some((kind, value)) = text.split_once(':') else {
        return Err(format!(
            "unrecognised check {text:?} (expected kind:value, '@' or '!')"
        ));
    };
    if kind.is_empty() || value.is_empty() {
        return Err(format!("incomplete check {text:?}"));
    }
    match kind {
        "rule" => Ok(Expr::Rule(value.to_string())),
        "role" => Ok(Expr::Role(Template::parse(value)?)),
        "field" => Ok(Expr::Field(FieldCheck::parse(value)?)),
        "http" | "https" => Err(format!("unsupported check {text:?} (remote checks)")),
        _ => Ok(Expr::Generic {
            kind: parse_credential(kind),
            value: Template::parse(value)?,
        }),
    }
}

fn parse_credential(kind: &str) -> Credential {
    match kind {
        "project_id" | "tenant_id" => Credential::ProjectId,
        "user_id" => Credential::UserId,
        "user_name" | "username" => Credential::UserName,
        "project_name" | "tenant_name" => Credential::ProjectName,
        "domain_id" | "project_domain_id" => Credential::DomainId,
        "is_admin" => Credential::IsAdmin,
        "system_scope" => Credential::SystemScope,
        "roles" => Credential::Roles,
        "True" | "False" => Credential::Literal(kind.to_string()),
        _ => {
            let quoted = kind.len() >= 2
                && ((kind.starts_with('\'') && kind.ends_with('\''))
                    || (kind.starts_with('"') && kind.ends_with('"')));
            if quoted {
                Credential::Literal(kind[1..kind.len() - 1].to_string())
            } else if !kind.is_empty() && kind.chars().all(|c| c.is_ascii_digit()) {
                Credential::Literal(kind.to_string())
            } else {
                Credential::Unknown
            }
        }
    }
}

// ----- policy file parser --------------------------------------------------------------------

enum FileError {
    Syntax { line: usize, message: String },
    Rule { rule: String, message: String },
}

fn syntax(line: usize, message: impl Into<String>) -> FileError {
    FileError::Syntax {
        line,
        message: message.into(),
    }
}

/// The `(rule name, check string)` pairs of a policy file, in file order.
fn parse_policy_file(text: &str) -> Result<Vec<(String, String)>, FileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        parse_json(text)
    } else {
        parse_yaml(text)
    }
}

fn parse_json(text: &str) -> Result<Vec<(String, String)>, FileError> {
    let value: Value = serde_json::from_str(text).map_err(|e| syntax(e.line(), e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(syntax(1, "expected a JSON object of rules"));
    };
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let source = match &value {
            Value::String(s) => s.clone(),
            Value::Array(items) => list_rule_to_string(items).ok_or_else(|| FileError::Rule {
                rule: name.clone(),
                message: "a list rule must be a list of strings or of lists of strings".into(),
            })?,
            _ => {
                return Err(FileError::Rule {
                    rule: name,
                    message: "the check must be a string".into(),
                });
            }
        };
        out.push((name, source));
    }
    Ok(out)
}

/// The legacy list syntax: `[]` is always true, `[["a", "b"], ["c"]]` is `(a and b) or (c)`.
fn list_rule_to_string(items: &[Value]) -> Option<String> {
    if items.is_empty() {
        return Some("@".into());
    }
    let mut alternatives = Vec::with_capacity(items.len());
    for item in items {
        let checks: Vec<&str> = match item {
            Value::String(s) => vec![s.as_str()],
            Value::Array(inner) => inner
                .iter()
                .map(Value::as_str)
                .collect::<Option<Vec<_>>>()?,
            _ => return None,
        };
        if checks.is_empty() || checks.iter().any(|c| c.split_whitespace().count() != 1) {
            return None;
        }
        alternatives.push(format!("({})", checks.join(" and ")));
    }
    Some(alternatives.join(" or "))
}

/// A quoted YAML scalar at the start of `text`: the value and the rest after the closing quote,
/// or None when the quote is not closed.
fn parse_quoted(text: &str) -> Option<(String, &str)> {
    let mut chars = text.char_indices();
    let (_, quote) = chars.next()?;
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        if quote == '\'' && c == '\'' {
            if text[i + 1..].starts_with('\'') {
                out.push('\'');
                chars.next();
                continue;
            }
            return Some((out, &text[i + 1..]));
        }
        if quote == '"' {
            if c == '"' {
                return Some((out, &text[i + 1..]));
            }
            if c == '\\' {
                let (_, escaped) = chars.next()?;
                out.push(match escaped {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
                continue;
            }
        }
        out.push(c);
    }
    None
}

/// `rest` holds only whitespace or a comment.
fn is_blank_or_comment(rest: &str) -> bool {
    let rest = rest.trim();
    rest.is_empty() || rest.starts_with('#')
}

/// Strips a ` #` comment from a plain scalar.
fn strip_comment(text: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        if c == '#' && prev_space {
            return text[..i].trim_end();
        }
        prev_space = c == ' ' || c == '\t';
    }
    text.trim_end()
}

/// Position of the `:` ending a plain mapping key (a colon followed by a space or the end).
fn key_separator(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    (0..bytes.len())
        .find(|&i| bytes[i] == b':' && bytes.get(i + 1).is_none_or(|b| *b == b' ' || *b == b'\t'))
}

/// The subset of YAML policy files use: a flat mapping of `"name": "check"` lines, keys and
/// values plain, single- or double-quoted, with comments and folded continuation lines.
fn parse_yaml(text: &str) -> Result<Vec<(String, String)>, FileError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<(String, String)> = Vec::new();
    // Index in `out` of an entry whose plain value may continue on indented lines, and the
    // line on which it started.
    let mut open_plain: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let line = lines[i];
        i += 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            let Some((index, _)) = open_plain else {
                return Err(syntax(
                    line_no,
                    "unexpected indentation (only a flat mapping of rules is supported)",
                ));
            };
            let piece = strip_comment(trimmed);
            if let Some((_, value)) = out.get_mut(index) {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(piece);
            }
            continue;
        }
        if let Some((index, start)) = open_plain.take() {
            check_not_empty(&out, index, start)?;
        }
        if trimmed == "---" || trimmed == "..." || trimmed == "{}" {
            continue;
        }
        if trimmed.starts_with('-') || trimmed.starts_with('[') {
            return Err(syntax(
                line_no,
                "expected a mapping of rule names to checks",
            ));
        }
        // The key.
        let (key, rest) = if trimmed.starts_with('"') || trimmed.starts_with('\'') {
            let Some((key, after)) = parse_quoted(trimmed) else {
                return Err(syntax(line_no, "unterminated quoted rule name"));
            };
            let Some(rest) = after.trim_start().strip_prefix(':') else {
                return Err(syntax(line_no, "expected ':' after the rule name"));
            };
            (key, rest)
        } else {
            let Some(sep) = key_separator(trimmed) else {
                return Err(syntax(line_no, "expected \"rule name\": \"check string\""));
            };
            (trimmed[..sep].trim_end().to_string(), &trimmed[sep + 1..])
        };
        if key.is_empty() {
            return Err(syntax(line_no, "empty rule name"));
        }
        // The value.
        let value = rest.trim();
        if value.starts_with('"') || value.starts_with('\'') {
            let mut buffer = value.to_string();
            let parsed = loop {
                if let Some((parsed, after)) = parse_quoted(&buffer) {
                    if !is_blank_or_comment(after) {
                        return Err(FileError::Rule {
                            rule: key,
                            message: format!("unexpected text after the quoted check: {after:?}"),
                        });
                    }
                    break parsed;
                }
                // A quoted scalar continues on the next line, folded into one space.
                let Some(next) = lines.get(i) else {
                    return Err(FileError::Rule {
                        rule: key,
                        message: format!("unterminated quoted check starting on line {line_no}"),
                    });
                };
                i += 1;
                buffer.push(' ');
                buffer.push_str(next.trim());
            };
            out.push((key, parsed));
        } else if value.starts_with('|')
            || value.starts_with('>')
            || value.starts_with('[')
            || value.starts_with('{')
            || value.starts_with('&')
            || value.starts_with('*')
            || value.starts_with('!')
                && value.len() > 1
                && !value[1..].starts_with(char::is_whitespace)
        {
            return Err(FileError::Rule {
                rule: key,
                message: "unsupported YAML value (write the check string, quoted if needed)".into(),
            });
        } else {
            out.push((key, strip_comment(value).to_string()));
            open_plain = Some((out.len() - 1, line_no));
        }
    }
    if let Some((index, start)) = open_plain {
        check_not_empty(&out, index, start)?;
    }
    Ok(out)
}

/// A plain YAML value that stayed empty is null, which is not a check string.
fn check_not_empty(out: &[(String, String)], index: usize, line: usize) -> Result<(), FileError> {
    match out.get(index) {
        Some((rule, value)) if value.is_empty() => Err(FileError::Rule {
            rule: rule.clone(),
            message: format!("no check string on line {line} (write \"\" for always allowed)"),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ctx(project: &str, roles: &[&str]) -> Context {
        Context {
            user_id: format!("user-{project}"),
            user_name: format!("user-{project}"),
            project_id: Some(project.to_string()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }
    }

    fn admin() -> Context {
        ctx("admin-project", &["admin", "member", "reader"])
    }
    fn member() -> Context {
        ctx("p1", &["member", "reader"])
    }
    fn reader() -> Context {
        ctx("p1", &["reader"])
    }
    fn other() -> Context {
        ctx("p2", &["member", "reader"])
    }

    fn target(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// A policy holding just the given rules (plus nothing else).
    fn policy_of(rules: &[(&str, &str)]) -> Policy {
        let mut policy = Policy {
            rules: HashMap::new(),
        };
        for (name, source) in rules {
            let expr = parse_check_string(source).expect("test rule parses");
            policy.rules.insert(
                name.to_string(),
                CompiledRule {
                    source: source.to_string(),
                    expr,
                },
            );
        }
        policy
    }

    fn eval_str(rule: &str, c: &Context, t: &Map<String, Value>) -> bool {
        policy_of(&[("r", rule)]).check(c, "r", t)
    }

    fn temp_file(ext: &str, contents: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "neutrino-policy-test-{}-{n}.{ext}",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("write temp file");
        path
    }

    fn network(project: &str, shared: bool, external: bool) -> Map<String, Value> {
        target(json!({
            "id": "net-1",
            "project_id": project,
            "tenant_id": project,
            "shared": shared,
            "router:external": external,
        }))
    }

    fn port(project: &str, net_project: &str, shared: bool) -> Map<String, Value> {
        target(json!({
            "id": "port-1",
            "project_id": project,
            "tenant_id": project,
            "network_id": "net-1",
            "device_owner": "",
            "network:project_id": net_project,
            "network:tenant_id": net_project,
            "network:shared": shared,
            "network:router:external": false,
        }))
    }

    #[test]
    fn defaults_all_parse_without_cycles() {
        for (name, source) in DEFAULT_RULES {
            assert!(
                parse_check_string(source).is_ok(),
                "default rule {name} does not parse: {source}"
            );
        }
        let policy = Policy::defaults();
        assert!(policy.find_reference_problem().is_none());
        assert_eq!(policy.rules.len(), DEFAULT_RULES.len(), "duplicate default");
        // Every rule a default references exists.
        for name in policy.rules.keys() {
            for reference in policy.references(name) {
                assert!(policy.has_rule(reference), "{name} references {reference}");
            }
        }
    }

    #[test]
    fn precedence_and_before_or() {
        let t = Map::new();
        let rule = "role:a or role:b and role:c";
        assert!(eval_str(rule, &ctx("p", &["a"]), &t));
        assert!(!eval_str(rule, &ctx("p", &["b"]), &t));
        assert!(eval_str(rule, &ctx("p", &["b", "c"]), &t));
        let grouped = "(role:a or role:b) and role:c";
        assert!(!eval_str(grouped, &ctx("p", &["a"]), &t));
        assert!(eval_str(grouped, &ctx("p", &["a", "c"]), &t));
        // Keywords are case-insensitive as in oslo.policy.
        assert!(eval_str("role:x OR role:a", &ctx("p", &["a"]), &t));
    }

    #[test]
    fn not_binds_tightest() {
        let t = Map::new();
        // (not a) and b
        let rule = "not role:a and role:b";
        assert!(eval_str(rule, &ctx("p", &["b"]), &t));
        assert!(!eval_str(rule, &ctx("p", &["a", "b"]), &t));
        // not (a and b)
        let grouped = "not (role:a and role:b)";
        assert!(eval_str(grouped, &ctx("p", &["a"]), &t));
        assert!(!eval_str(grouped, &ctx("p", &["a", "b"]), &t));
        assert!(eval_str("not not role:a", &ctx("p", &["a"]), &t));
        // (not a) or b
        assert!(eval_str("not role:a or role:b", &ctx("p", &["a", "b"]), &t));
    }

    #[test]
    fn parentheses_and_constants() {
        let t = Map::new();
        let c = ctx("p", &["x"]);
        assert!(eval_str("((role:x))", &c, &t));
        assert!(eval_str("( role:y or ( role:x and @ ) )", &c, &t));
        assert!(!eval_str("role:x and !", &c, &t));
        assert!(eval_str("", &c, &t));
        assert!(eval_str("   ", &c, &t));
        assert!(eval_str("@", &c, &t));
        assert!(!eval_str("!", &c, &t));
        assert_eq!(
            parse_check_string("(role:a or role:b) and role:c"),
            Ok(Expr::And(vec![
                Expr::Or(vec![
                    Expr::Role(Template(vec![Piece::Text("a".into())])),
                    Expr::Role(Template(vec![Piece::Text("b".into())])),
                ]),
                Expr::Role(Template(vec![Piece::Text("c".into())])),
            ]))
        );
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "(role:a",
            "role:a)",
            "role:a and",
            "or role:a",
            "not",
            "role:a role:b",
            "admin",
            "role:",
            "rule:",
            ":x",
            "()",
            "project_id:%(project_id",
            "project_id:%(project_id)d",
            "project_id:50%",
            "field:networks",
            "field:networks:shared",
            "field::shared=True",
            "field:port:device_owner=~^net(work)",
            "http://example.com/check",
        ] {
            assert!(parse_check_string(bad).is_err(), "{bad:?} should not parse");
        }
        let deep = format!("{}role:a{}", "(".repeat(1000), ")".repeat(1000));
        assert!(parse_check_string(&deep).is_err());
        let nots = format!("{}role:a", "not ".repeat(1000));
        assert!(parse_check_string(&nots).is_err());
    }

    #[test]
    fn no_panic_on_odd_input() {
        let c = member();
        let t = target(json!({"project_id": null, "x": [1], "y": {"a": 1}}));
        for rule in [
            "%",
            "%%",
            "(",
            ")",
            "))((",
            "not not",
            "a:b:c:d",
            "field:a:b=~",
            "field:a:b=~^",
            "role:%(x)s",
            "project_id:%(y)s",
            "project_id:%(project_id)s",
            "é:ü",
            "rule:r",
            "field:a:b=~\\",
            "field:a:b=~^x\\$",
            "'quoted':%(x)s",
            "::::",
            "\u{0}:\u{0}",
        ] {
            if let Ok(expr) = parse_check_string(rule) {
                let policy = Policy {
                    rules: HashMap::from([(
                        "r".to_string(),
                        CompiledRule {
                            source: rule.to_string(),
                            expr,
                        },
                    )]),
                };
                // A self-reference must fail closed rather than recurse forever.
                let _ = policy.check(&c, "r", &t);
            }
        }
        let cyclic = policy_of(&[("a", "rule:b"), ("b", "not rule:a")]);
        assert!(!cyclic.check(&c, "a", &t));
        assert!(!cyclic.check(&c, "b", &t));
    }

    #[test]
    fn substitution() {
        let c = member();
        let t = target(json!({"project_id": "p1", "user_id": "user-p1", "n": 5, "b": true}));
        assert!(eval_str("project_id:%(project_id)s", &c, &t));
        assert!(
            eval_str("tenant_id:%(tenant_id)s", &c, &t),
            "tenant_id aliases project_id"
        );
        assert!(eval_str("user_id:%(user_id)s", &c, &t));
        assert!(!eval_str("project_id:%(project_id)s", &other(), &t));
        assert!(
            !eval_str("project_id:%(missing)s", &c, &t),
            "missing key is false"
        );
        assert!(eval_str("not project_id:%(missing)s", &c, &t));
        assert!(eval_str("project_id:p1", &c, &t), "literal value");
        assert!(eval_str("project_id:x%(n)sy", &ctx("x5y", &["member"]), &t));
        assert!(eval_str("True:%(b)s", &c, &t));
        assert!(eval_str("'5':%(n)s", &c, &t));
        assert!(eval_str("roles:member", &c, &t));
        assert!(!eval_str("unknown_cred:p1", &c, &t));
        assert!(eval_str("is_admin:True", &admin(), &t));
        assert!(!eval_str("is_admin:True", &c, &t));
        assert!(eval_str("is_admin:False", &c, &t));
        let mut system = admin();
        system.system_scope = true;
        assert!(eval_str("system_scope:all", &system, &t));
        assert!(!eval_str("system_scope:all", &admin(), &t));
        // Unscoped callers and null targets never match.
        let mut unscoped = member();
        unscoped.project_id = None;
        assert!(!eval_str("project_id:%(project_id)s", &unscoped, &t));
        let null_owner = target(json!({"project_id": null}));
        assert!(!eval_str(
            "project_id:%(project_id)s",
            &unscoped,
            &null_owner
        ));
        // network:tenant_id and network:project_id are interchangeable.
        let child = target(json!({"network:tenant_id": "p1"}));
        assert!(eval_str("project_id:%(network:project_id)s", &c, &child));
        assert!(eval_str("tenant_id:%(network:tenant_id)s", &c, &child));
        // A role name may be substituted too.
        let role_target = target(json!({"needed": "Member"}));
        assert!(eval_str("role:%(needed)s", &c, &role_target));
    }

    #[test]
    fn role_model() {
        let t = Map::new();
        assert!(eval_str("role:member", &admin(), &t));
        assert!(eval_str("role:reader", &admin(), &t));
        assert!(eval_str("role:member", &ctx("p", &["rbacdemo"]), &t));
        assert!(eval_str("role:rbacdemo", &ctx("p", &["rbacdemo"]), &t));
        assert!(!eval_str("role:member", &reader(), &t));
        assert!(eval_str("role:reader", &reader(), &t));
        assert!(!eval_str("role:admin", &member(), &t));
        assert!(!eval_str("role:reader", &ctx("p", &[]), &t));
        assert!(eval_str("role:ADMIN", &admin(), &t));
        assert!(!eval_str("role:advsvc", &member(), &t));
    }

    #[test]
    fn field_checks() {
        let c = member();
        let rule = "field:networks:shared=True";
        assert!(eval_str(rule, &c, &network("p2", true, false)));
        assert!(!eval_str(rule, &c, &network("p2", false, false)));
        assert!(eval_str(
            "field:networks:shared=true",
            &c,
            &network("p2", true, false)
        ));
        assert!(eval_str(
            "field:networks:shared=False",
            &c,
            &network("p2", false, false)
        ));
        // For a child resource, the network's attribute is used.
        assert!(eval_str(rule, &c, &port("p2", "p2", true)));
        assert!(!eval_str(rule, &c, &port("p2", "p2", false)));
        let mut sneaky = port("p2", "p2", false);
        sneaky.insert("shared".into(), json!(true));
        assert!(
            !eval_str(rule, &c, &sneaky),
            "child's own attribute is not the network's"
        );
        // router:external contains a colon.
        assert!(eval_str(
            "field:networks:router:external=True",
            &c,
            &network("p2", false, true)
        ));
        let subnet = target(json!({"project_id": "p2", "network:project_id": "p2",
            "network:router:external": true}));
        assert!(eval_str("field:subnets:router:external=True", &c, &subnet));
        // Regex prefix.
        let rule = "field:port:device_owner=~^network:";
        let mut p = port("p1", "p1", false);
        p.insert("device_owner".into(), json!("network:router_interface"));
        assert!(eval_str(rule, &c, &p));
        p.insert("device_owner".into(), json!("compute:nova"));
        assert!(!eval_str(rule, &c, &p));
        p.remove("device_owner");
        assert!(!eval_str(rule, &c, &p));
        assert!(eval_str(
            "field:port:device_owner=~^network:.*",
            &c,
            &target(json!({"device_owner": "network:dhcp"}))
        ));
        assert!(eval_str(
            "field:port:device_owner=~^network:dhcp$",
            &c,
            &target(json!({"device_owner": "network:dhcp"}))
        ));
        assert!(!eval_str(
            "field:port:device_owner=~^network:dhcp$",
            &c,
            &target(json!({"device_owner": "network:dhcpx"}))
        ));
        // Literal "*".
        let wildcard = "field:rbac_policy:target_tenant=*";
        assert!(eval_str(
            wildcard,
            &c,
            &target(json!({"target_tenant": "*"}))
        ));
        assert!(!eval_str(
            wildcard,
            &c,
            &target(json!({"target_tenant": "p3"}))
        ));
        // Subnet pools use their own shared attribute.
        assert!(eval_str(
            "field:subnetpools:shared=True",
            &c,
            &target(json!({"shared": true}))
        ));
        // Numbers and strings.
        assert!(eval_str(
            "field:networks:mtu=1500",
            &c,
            &target(json!({"mtu": 1500}))
        ));
        assert!(!eval_str(
            "field:networks:shared=True",
            &c,
            &target(json!({"shared": "yes"}))
        ));
    }

    #[test]
    fn network_defaults() {
        let p = Policy::defaults();
        let own = network("p1", false, false);
        let foreign = network("p2", false, false);
        // create
        assert!(p.check(&admin(), "create_network", &foreign));
        assert!(p.check(&member(), "create_network", &own));
        assert!(!p.check(&reader(), "create_network", &own));
        assert!(!p.check(&member(), "create_network", &foreign));
        assert!(!p.check(&member(), "create_network:shared", &own));
        assert!(p.check(&admin(), "create_network:shared", &own));
        assert!(!p.check(&member(), "create_network:provider:network_type", &own));
        assert!(p.check(&member(), "create_network:port_security_enabled", &own));
        assert!(
            p.check(&member(), "create_network:description", &own),
            "no attribute rule"
        );
        // get
        assert!(p.check(&admin(), "get_network", &foreign));
        assert!(p.check(&member(), "get_network", &own));
        assert!(p.check(&reader(), "get_network", &own));
        assert!(!p.check(&other(), "get_network", &own));
        assert!(
            p.check(&other(), "get_network", &network("p1", true, false)),
            "shared"
        );
        assert!(
            p.check(&other(), "get_network", &network("p1", false, true)),
            "external"
        );
        assert!(p.check(&ctx("p9", &["advsvc"]), "get_network", &own));
        assert!(!p.check(&member(), "get_network:provider:segmentation_id", &own));
        assert!(p.check(&admin(), "get_network:provider:segmentation_id", &own));
        assert!(p.check(&other(), "get_network:router:external", &own));
        // update / delete
        assert!(p.check(&member(), "update_network", &own));
        assert!(!p.check(&reader(), "update_network", &own));
        assert!(!p.check(&other(), "update_network", &own));
        assert!(!p.check(&other(), "update_network", &network("p1", true, false)));
        assert!(p.check(&admin(), "update_network", &own));
        assert!(!p.check(&member(), "update_network:router:external", &own));
        assert!(p.check(&member(), "delete_network", &own));
        assert!(!p.check(&reader(), "delete_network", &own));
        assert!(!p.check(&other(), "delete_network", &own));
    }

    #[test]
    fn port_defaults() {
        let p = Policy::defaults();
        let own = port("p1", "p1", false);
        let on_foreign_net = port("p1", "p2", false);
        let on_shared_net = port("p1", "p2", true);
        // create
        assert!(p.check(&member(), "create_port", &own));
        assert!(!p.check(&reader(), "create_port", &own));
        assert!(!p.check(&member(), "create_port", &on_foreign_net));
        assert!(p.check(&member(), "create_port", &on_shared_net));
        assert!(p.check(&admin(), "create_port", &on_foreign_net));
        assert!(p.check(&ctx("svc", &["service"]), "create_port", &on_foreign_net));
        // device_owner network:* only on own network
        let mut router_port = on_shared_net.clone();
        router_port.insert("device_owner".into(), json!("network:router_interface"));
        assert!(!p.check(&member(), "create_port:device_owner", &router_port));
        assert!(p.check(&admin(), "create_port:device_owner", &router_port));
        let mut own_router_port = own.clone();
        own_router_port.insert("device_owner".into(), json!("network:router_interface"));
        assert!(p.check(&member(), "create_port:device_owner", &own_router_port));
        let mut vm_port = on_shared_net.clone();
        vm_port.insert("device_owner".into(), json!("compute:nova"));
        assert!(p.check(&member(), "create_port:device_owner", &vm_port));
        assert!(!p.check(&member(), "create_port:mac_address", &on_shared_net));
        assert!(p.check(&member(), "create_port:mac_address", &own));
        assert!(p.check(&member(), "create_port:fixed_ips:subnet_id", &on_shared_net));
        assert!(!p.check(
            &member(),
            "create_port:fixed_ips:ip_address",
            &on_shared_net
        ));
        assert!(!p.check(&member(), "create_port:binding:host_id", &own));
        assert!(p.check(&admin(), "create_port:binding:host_id", &own));
        // get
        assert!(p.check(&reader(), "get_port", &own));
        assert!(p.check(&member(), "get_port", &on_foreign_net));
        assert!(!p.check(&other(), "get_port", &own));
        assert!(
            p.check(&other(), "get_port", &on_foreign_net),
            "network owner sees ports"
        );
        assert!(p.check(&admin(), "get_port", &on_foreign_net));
        assert!(!p.check(&member(), "get_port:binding:vif_type", &own));
        assert!(p.check(&admin(), "get_port:binding:vif_type", &own));
        // update / delete
        assert!(p.check(&member(), "update_port", &own));
        assert!(!p.check(&reader(), "update_port", &own));
        assert!(!p.check(&other(), "update_port", &own));
        assert!(p.check(&admin(), "update_port", &own));
        assert!(!p.check(&member(), "update_port:mac_address", &own));
        assert!(p.check(&ctx("p1", &["manager"]), "update_port:mac_address", &own));
        assert!(p.check(&member(), "update_port:fixed_ips:subnet_id", &on_shared_net));
        assert!(p.check(&member(), "delete_port", &own));
        assert!(
            p.check(&other(), "delete_port", &on_foreign_net),
            "network owner deletes"
        );
        assert!(!p.check(&reader(), "delete_port", &own));
    }

    #[test]
    fn subnet_and_misc_defaults() {
        let p = Policy::defaults();
        let subnet = |project: &str, net: &str, shared: bool, external: bool| {
            target(json!({"project_id": project, "network:project_id": net,
                "network:tenant_id": net, "network:shared": shared,
                "network:router:external": external}))
        };
        assert!(p.check(
            &member(),
            "create_subnet",
            &subnet("p1", "p1", false, false)
        ));
        assert!(!p.check(&member(), "create_subnet", &subnet("p1", "p2", true, false)));
        assert!(p.check(&other(), "get_subnet", &subnet("p1", "p1", true, false)));
        assert!(p.check(&other(), "get_subnet", &subnet("p1", "p1", false, true)));
        assert!(!p.check(&other(), "get_subnet", &subnet("p1", "p1", false, false)));
        assert!(!p.check(&member(), "get_quota", &target(json!({"project_id": "p1"}))));
        assert!(p.check(
            &ctx("p1", &["manager"]),
            "get_quota",
            &target(json!({"project_id": "p1"}))
        ));
        assert!(p.check(&admin(), "update_quota", &Map::new()));
        assert!(!p.check(
            &member(),
            "update_quota",
            &target(json!({"project_id": "p1"}))
        ));
        assert!(!p.check(&member(), "get_agent", &Map::new()));
        let rbac = target(json!({"project_id": "p1", "target_tenant": "*"}));
        assert!(!p.check(&member(), "create_rbac_policy:target_tenant", &rbac));
        assert!(p.check(&admin(), "create_rbac_policy:target_tenant", &rbac));
        let sgr = target(json!({"project_id": "p1", "security_group:tenant_id": "p1"}));
        assert!(p.check(&member(), "create_security_group_rule", &sgr));
        assert!(!p.check(&other(), "create_security_group_rule", &sgr));
        // Unknown actions fall back to "default" (admin_or_owner).
        let owned = target(json!({"project_id": "p1"}));
        assert!(p.check(&reader(), "get_widget", &owned));
        assert!(!p.check(&other(), "get_widget", &owned));
        assert!(p.check(&admin(), "get_widget", &owned));
        assert!(p.has_rule("create_network:shared"));
        assert!(!p.has_rule("create_network:name"));
    }

    #[test]
    fn load_none_is_defaults() {
        let p = Policy::load(None).expect("defaults load");
        assert_eq!(p.rules.len(), Policy::defaults().rules.len());
    }

    #[test]
    fn yaml_file_overrides_defaults() {
        let path = temp_file(
            "yaml",
            "# operator overrides\n---\n\"create_network\": \"rule:admin_only\"\n\
             'get_network': 'role:reader'   # everyone reads\n\
             create_network:shared: rule:admin_or_owner\n\
             \"custom\": \"role:a or\n  role:b\"\n\
             plain_multi: role:a or\n  role:c\n\
             \"always\": \"\"\n",
        );
        let loaded = Policy::load(Some(&path));
        let _ = std::fs::remove_file(&path);
        let p = loaded.expect("yaml loads");
        let own = network("p1", false, false);
        assert!(!p.check(&member(), "create_network", &own));
        assert!(p.check(&admin(), "create_network", &own));
        assert!(p.check(&other(), "get_network", &own));
        assert!(p.check(&member(), "create_network:shared", &own));
        assert!(p.check(&ctx("p", &["b"]), "custom", &Map::new()));
        assert!(p.check(&ctx("p", &["c"]), "plain_multi", &Map::new()));
        assert!(p.check(&ctx("p", &[]), "always", &Map::new()));
        // Untouched defaults stay.
        assert!(p.check(&member(), "update_network", &own));
        assert!(!p.check(&other(), "update_network", &own));
    }

    #[test]
    fn json_file_overrides_defaults() {
        let path = temp_file(
            "json",
            r#"{
                "update_network": "role:admin",
                "admin_or_project_member": "rule:admin_only",
                "legacy": [["role:a", "role:b"], ["role:c"]],
                "legacy_any": []
            }"#,
        );
        let loaded = Policy::load(Some(&path));
        let _ = std::fs::remove_file(&path);
        let p = loaded.expect("json loads");
        let own = network("p1", false, false);
        assert!(!p.check(&member(), "update_network", &own));
        assert!(
            !p.check(&member(), "create_network", &own),
            "helper rule override"
        );
        assert!(p.check(&ctx("p", &["a", "b"]), "legacy", &Map::new()));
        assert!(!p.check(&ctx("p", &["a"]), "legacy", &Map::new()));
        assert!(p.check(&ctx("p", &["c"]), "legacy", &Map::new()));
        assert!(p.check(&ctx("p", &[]), "legacy_any", &Map::new()));
    }

    #[test]
    fn malformed_rule_is_named() {
        let path = temp_file(
            "yaml",
            "\"create_network\": \"role:admin\"\n\"get_port\": \"role:admin and (\"\n",
        );
        let loaded = Policy::load(Some(&path));
        let _ = std::fs::remove_file(&path);
        match loaded {
            Err(PolicyError::Rule { rule, path: p, .. }) => {
                assert_eq!(rule, "get_port");
                assert_eq!(p, path);
            }
            other => panic!("expected a rule error, got {other:?}"),
        }

        let path = temp_file("json", r#"{"update_port": "admin"}"#);
        let err = Policy::load(Some(&path)).expect_err("malformed");
        let _ = std::fs::remove_file(&path);
        let message = err.to_string();
        assert!(message.contains("update_port"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");

        let path = temp_file("json", r#"{"a": "rule:b", "b": "rule:a"}"#);
        let err = Policy::load(Some(&path)).expect_err("cycle");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(err, PolicyError::Rule { ref rule, .. } if rule == "a" || rule == "b"));

        let path = temp_file("json", r#"{"a": 5}"#);
        let err = Policy::load(Some(&path)).expect_err("non-string");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(err, PolicyError::Rule { ref rule, .. } if rule == "a"));

        let path = temp_file("json", "{\"a\": ");
        let err = Policy::load(Some(&path)).expect_err("bad json");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(err, PolicyError::Syntax { .. }));

        let path = temp_file("yaml", "a:\n");
        let err = Policy::load(Some(&path)).expect_err("null value");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(err, PolicyError::Rule { ref rule, .. } if rule == "a"));

        let path = temp_file("yaml", "a: 'unterminated\n");
        let err = Policy::load(Some(&path)).expect_err("unterminated");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(err, PolicyError::Rule { ref rule, .. } if rule == "a"));

        let path = temp_file("yaml", "  indented: role:a\n");
        let err = Policy::load(Some(&path)).expect_err("indented");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(err, PolicyError::Syntax { line: 1, .. }));

        let missing = std::env::temp_dir().join("neutrino-policy-test-does-not-exist.yaml");
        assert!(matches!(
            Policy::load(Some(&missing)),
            Err(PolicyError::Read { .. })
        ));
    }
}
