//! `/v2.0/extensions`: the API extensions this server implements, and nothing else.
//!
//! Clients and Tempest decide what to use and test from this list, so an alias may only be
//! added here together with the behaviour it names.

use axum::extract::Path;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};

use neutrino_core::{ApiError, ApiResult, Context};

use crate::{ApiState, common};

/// (alias, name, description, updated) of each implemented extension.
pub const EXTENSIONS: &[(&str, &str, &str, &str)] = &[
    (
        "address-group",
        "Address group",
        "Support address group",
        "2020-07-15T10:00:00-00:00",
    ),
    (
        "address-scope",
        "Address scope",
        "Address scopes extension.",
        "2015-07-26T10:00:00-00:00",
    ),
    (
        "agent",
        "agent",
        "The agent management extension.",
        "2013-02-03T10:00:00-00:00",
    ),
    (
        "allowed-address-pairs",
        "Allowed Address Pairs",
        "Provides allowed address pairs",
        "2013-07-23T10:00:00-00:00",
    ),
    (
        "availability_zone",
        "Availability Zone",
        "The availability zone extension.",
        "2015-01-01T10:00:00-00:00",
    ),
    (
        "binding",
        "Port Binding",
        "Expose port bindings of a virtual port to external application",
        "2014-02-03T10:00:00-00:00",
    ),
    (
        "default-subnetpools",
        "Default Subnetpools",
        "Provides ability to mark and use a subnetpool as the default.",
        "2016-02-18T18:00:00-00:00",
    ),
    (
        "dhcp_agent_scheduler",
        "DHCP Agent Scheduler",
        "Schedule networks among dhcp agents",
        "2013-02-07T10:00:00-00:00",
    ),
    (
        "empty-string-filtering",
        "Empty String Filtering Extension",
        "Allow filtering by attributes with empty string value",
        "2018-05-01T10:00:00-00:00",
    ),
    (
        "external-net",
        "Neutron external network",
        "Adds external network attribute to network resource.",
        "2013-01-14T10:00:00-00:00",
    ),
    (
        "extra_dhcp_opt",
        "Neutron Extra DHCP options",
        "Extra options configuration for DHCP. For example PXE boot options to DHCP clients can be specified (e.g. tftp-server, server-ip-address, bootfile-name)",
        "2013-03-17T12:00:00-00:00",
    ),
    (
        "multi-provider",
        "Multi Provider Network",
        "Expose mapping of virtual networks to multiple physical networks",
        "2013-06-27T10:00:00-00:00",
    ),
    (
        "net-mtu",
        "Network MTU",
        "Provides MTU attribute for a network resource.",
        "2015-03-25T10:00:00-00:00",
    ),
    (
        "net-mtu-writable",
        "Network MTU (writable)",
        "Provides a writable MTU attribute for a network resource.",
        "2017-07-12T00:00:00-00:00",
    ),
    (
        "network_availability_zone",
        "Network Availability Zone",
        "Availability zone support for network.",
        "2015-01-01T10:00:00-00:00",
    ),
    (
        "network-ip-availability",
        "Network IP Availability",
        "Provides IP availability data for each network and subnet.",
        "2015-09-24T00:00:00-00:00",
    ),
    (
        "pagination",
        "Pagination support",
        "Extension that indicates that pagination is enabled.",
        "2016-06-12T00:00:00-00:00",
    ),
    (
        "port-mac-address-regenerate",
        "Neutron Port MAC address regenerate",
        "Network port MAC address regenerate",
        "2018-05-03T10:00:00-00:00",
    ),
    (
        "ip-substring-filtering",
        "IP address substring filtering",
        "Provides IP address substring filtering when listing ports",
        "2017-11-28T09:00:00-00:00",
    ),
    (
        "port-security-groups-filtering",
        "Port filtering on security groups",
        "Provides security groups filtering when listing ports",
        "2018-01-09T09:00:00-00:00",
    ),
    (
        "port-security",
        "Port Security",
        "Provides port security",
        "2012-07-23T10:00:00-00:00",
    ),
    (
        "project-id",
        "project_id field enabled",
        "Extension that indicates that project_id field is enabled.",
        "2016-09-09T09:09:09-09:09",
    ),
    (
        "provider",
        "Provider Network",
        "Expose mapping of virtual networks to physical networks",
        "2012-09-07T10:00:00-00:00",
    ),
    (
        "quota_details",
        "Quota details management support",
        "Expose functions for quotas usage statistics per project",
        "2017-02-10T10:00:00-00:00",
    ),
    (
        "quotas",
        "Quota management support",
        "Expose functions for quotas management per project",
        "2012-07-29T10:00:00-00:00",
    ),
    (
        "rbac-address-group",
        "Add address_group type to RBAC",
        "Add address_group type to network RBAC",
        "2021-01-20T00:00:00-00:00",
    ),
    (
        "rbac-address-scope",
        "Add address_scope type to RBAC",
        "Add address_scope type to RBAC",
        "2020-02-12T00:00:00-00:00",
    ),
    (
        "rbac-policies",
        "RBAC Policies",
        "Allows creation and modification of policies that control project access to resources.",
        "2015-06-17T12:15:12-00:00",
    ),
    (
        "rbac-security-groups",
        "Add security_group type to network RBAC",
        "Add security_group type to network RBAC",
        "2019-02-14T00:00:00-00:00",
    ),
    (
        "rbac-subnetpool",
        "Add subnetpool type to RBAC",
        "Add subnetpool type to RBAC",
        "2020-02-05T00:00:00-00:00",
    ),
    (
        "revision-if-match",
        "If-Match constraints based on revision_number",
        "Extension indicating that If-Match based on revision_number is supported.",
        "2016-12-11T00:00:00-00:00",
    ),
    (
        "security-group",
        "security-group",
        "The security groups extension.",
        "2012-10-05T10:00:00-00:00",
    ),
    (
        "security-groups-normalized-cidr",
        "Normalized CIDR field for security group rules",
        "Add new field with normalized remote_ip_prefix cidr in SG rule",
        "2020-07-28T10:00:00-00:00",
    ),
    (
        "security-groups-remote-address-group",
        "Remote address group id field for security group rules",
        "Add new field of remote address group id in SG rules",
        "2020-08-25T10:00:00-00:00",
    ),
    (
        "security-groups-rules-belongs-to-default-sg",
        "Security group rule belongs to the project's default security group",
        "Flag to determine if the security group rule belongs to the project's default security group",
        "2023-05-23T10:00:00-00:00",
    ),
    (
        "segment",
        "Segment",
        "Segments extension.",
        "2016-02-24T17:00:00-00:00",
    ),
    (
        "service-type",
        "Neutron Service Type Management",
        "API for retrieving service providers for Neutron advanced services",
        "2013-01-20T00:00:00-00:00",
    ),
    (
        "sorting",
        "Sorting support",
        "Extension that indicates that sorting is enabled.",
        "2016-06-12T00:00:00-00:00",
    ),
    (
        "tag",
        "Tag support",
        "Enables to set tag on resources.",
        "2016-01-01T00:00:00-00:00",
    ),
    (
        "standard-attr-description",
        "standard-attr-description",
        "Extension to add descriptions to standard attributes",
        "2016-02-10T10:00:00-00:00",
    ),
    (
        "standard-attr-revisions",
        "Resource revision numbers",
        "This extension will display the revision number of neutron resources.",
        "2016-04-11T10:00:00-00:00",
    ),
    (
        "standard-attr-tag",
        "Tag support for resources with standard attribute: network, port, subnet, subnetpool",
        "Enables to set tag on resources with standard attribute.",
        "2017-01-01T00:00:00-00:00",
    ),
    (
        "standard-attr-timestamp",
        "Resource timestamps",
        "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes.",
        "2016-09-12T10:00:00-00:00",
    ),
    (
        "stateful-security-group",
        "Stateful security group",
        "Indicates if the security group is stateful or not",
        "2019-11-26T09:00:00-00:00",
    ),
    (
        "subnetpool-prefix-ops",
        "Subnet Pool Prefix Operations",
        "Provides support for adjusting the prefix list of subnet pools",
        "2019-02-08T10:00:00-00:00",
    ),
    (
        "subnet-external-network",
        "Subnet belongs to an external network",
        "Informs if the subnet belongs to an external network",
        "2024-02-05T18:00:00-00:00",
    ),
    (
        "subnet_allocation",
        "Subnet Allocation",
        "Enables allocation of subnets from a subnet pool",
        "2015-03-30T10:00:00-00:00",
    ),
    (
        "expose-port-forwarding-in-fip",
        "Expose Floating IP port forwardings",
        "Expose port forwarding fields in floating IP response",
        "2018-06-28T16:00:00-00:00",
    ),
    (
        "ext-gw-mode",
        "Neutron L3 Configurable external gateway mode",
        "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway",
        "2013-03-28T10:00:00-00:00",
    ),
    (
        "extraroute",
        "Neutron Extra Route",
        "Extra routes configuration for L3 router",
        "2013-02-01T10:00:00-00:00",
    ),
    (
        "extraroute-atomic",
        "Atomically add/remove extra routes",
        "Edit extra routes of a router on server side by atomically adding/removing extra routes",
        "2019-07-10T00:00:00+00:00",
    ),
    (
        "fip-port-details",
        "Floating IP Port Details Extension",
        "Add port_details attribute to Floating IP resource",
        "2018-04-09T10:00:00-00:00",
    ),
    (
        "floating-ip-port-forwarding",
        "Floating IP Port Forwarding",
        "Allow port forwarding from floating IP port to an internal port",
        "2018-01-19T10:00:00-00:00",
    ),
    (
        "floating-ip-port-forwarding-description",
        "Floating IP Port Forwarding new attribute description",
        "Add a description field to Port Forwarding rules",
        "2019-11-01T10:00:00-00:00",
    ),
    (
        "l3-ha",
        "HA Router extension",
        "Adds HA capability to routers.",
        "2014-04-26T00:00:00-00:00",
    ),
    (
        "l3_agent_scheduler",
        "L3 Agent Scheduler",
        "Schedule routers among l3 agents",
        "2013-02-07T10:00:00-00:00",
    ),
    (
        "router",
        "Neutron L3 Router",
        "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway.",
        "2012-07-20T10:00:00-00:00",
    ),
    (
        "router_availability_zone",
        "Router Availability Zone",
        "Availability zone support for router.",
        "2015-01-01T10:00:00-00:00",
    ),
];

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/extensions", get(list))
        .route("/v2.0/extensions/{alias}", get(show))
        .route("/v2.0/service-providers", get(service_providers))
}

fn doc(e: &(&str, &str, &str, &str)) -> Value {
    json!({"alias": e.0, "name": e.1, "description": e.2, "updated": e.3, "links": []})
}

/// Whether an alias is implemented.
pub fn enabled(alias: &str) -> bool {
    EXTENSIONS.iter().any(|e| e.0 == alias)
}

/// `GET /v2.0/service-providers` (service-type): no advanced-service drivers are loaded yet.
async fn service_providers(Extension(_ctx): Extension<Context>) -> ApiResult<Response> {
    Ok(common::ok("service_providers", Value::Array(vec![])))
}

async fn list(Extension(_ctx): Extension<Context>) -> ApiResult<Response> {
    Ok(common::ok(
        "extensions",
        Value::Array(EXTENSIONS.iter().map(doc).collect()),
    ))
}

async fn show(
    Extension(_ctx): Extension<Context>,
    Path(alias): Path<String>,
) -> ApiResult<Response> {
    match EXTENSIONS.iter().find(|e| e.0 == alias) {
        Some(e) => Ok(common::ok("extension", doc(e))),
        None => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "HTTPNotFound",
            format!("Extension with alias {alias} does not exist"),
        )),
    }
}
