//! What the collections' list handlers share on top of neutrino-core's list module: the
//! visibility of RBAC-shared objects as SQL, and which filters SQL may answer for a caller.
//!
//! Everything here only narrows what SQL returns; the handlers still check visibility and
//! policy on each row, so this module must never be the only check of what a caller sees.

use neutrino_core::Context;
use neutrino_core::list::Source;

use crate::{ApiState, rbac};

/// Restricts `src` to the objects of `object_type` that `ctx` may see: admins all; others
/// their own and those granted to their project or to everyone with one of `actions`
/// (Neutron's RBAC query hook; the rows of `rbac_policies` mirror the objects' grants).
pub fn rbac_scope(src: &mut Source, ctx: &Context, object_type: &str, actions: &[&str]) {
    let table = src.table();
    if let Some(ids) = rbac_visible(src, ctx, table, object_type, actions) {
        src.scope(format!("t.id IN ({ids})"));
    }
}

/// Restricts `src` (rows with a `network_id`) to those on networks `ctx` may see.
pub fn on_visible_networks(src: &mut Source, ctx: &Context, actions: &[&str]) {
    if let Some(ids) = rbac_visible(src, ctx, "networks", "network", actions) {
        src.scope(format!("t.network_id IN ({ids})"));
    }
}

/// A query of the ids of `table` rows (of RBAC `object_type`) visible to `ctx`; None for
/// admins, who see all.
fn rbac_visible(
    src: &mut Source,
    ctx: &Context,
    table: &str,
    object_type: &str,
    actions: &[&str],
) -> Option<String> {
    if ctx.is_admin() {
        return None;
    }
    let Some(project) = ctx.project_id.as_deref() else {
        // An unscoped caller owns nothing and is granted nothing.
        return Some("SELECT NULL WHERE 1 = 0".into());
    };
    let owner = src.param(project);
    let ty = src.param(object_type);
    let acts: Vec<String> = actions.iter().map(|a| src.param(a)).collect();
    let target = src.param(project);
    let wildcard = src.param(rbac::WILDCARD);
    Some(format!(
        "SELECT o.id FROM {table} o WHERE o.project_id = {owner} \
         UNION SELECT r.object_id FROM rbac_policies r WHERE r.object_type = {ty} \
         AND r.action IN ({}) AND r.target_project IN ({target}, {wildcard})",
        acts.join(", ")
    ))
}

/// The attributes among `keys` that policy never hides from `ctx` on `resource`
/// (`get_<resource>:<attr>` rules; admins see everything): a filter on a hidden attribute
/// is ignored, so only these may be answered by SQL.
pub fn unhidden<'k>(
    st: &ApiState,
    ctx: &Context,
    resource: &str,
    keys: &[&'k str],
) -> Vec<&'k str> {
    keys.iter()
        .copied()
        .filter(|k| ctx.is_admin() || !st.policy.has_rule(&format!("get_{resource}:{k}")))
        .collect()
}
