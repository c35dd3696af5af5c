//! `/v2.0/{collection}/{id}/tags[/{tag}]`: the tag API (standard-attr-tag) for every taggable
//! collection.
//!
//! Tags live in the resource document (`tags`), so every change bumps the resource's revision
//! and is logged like any other update. Reads need visibility of the resource; writes need
//! the policy Neutron's tagging controller enforces (neutron/extensions/tagging.py):
//! `update_<resource>:tags` to add or replace, `delete_<resource>:tags` to remove, checked
//! against the resource as its own update rule sees it. Owning the project is not enough: a
//! reader of the project may look at tags but never change them.
//!
//! Tag values are checked before the resource is looked up, with neutron-lib's validators and
//! messages (`InvalidInput`): a body's `tags` is a list of unique strings of at most 255
//! characters (`type:list_of_unique_strings`), a tag in the path a string of at most 255
//! characters. Tags are one-line strings: control characters are refused too
//! (`common::check_line`; Neutron does not check them, PostgreSQL cannot store NUL).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};

use neutrino_core::db::{self, Kind, Obj};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::{
    ApiState, attrs, common, floatingips, networks, ports, routers, security_groups, subnetpools,
    subnets,
};

/// Neutron's `MAX_TAGS_COUNT` and `MAX_TAG_LEN` (neutron/extensions/tagging.py).
const MAX_TAGS: usize = 50;
const MAX_TAG_LEN: usize = 255;

/// Routes of the tag API.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v2.0/{collection}/{id}/tags",
            get(list).put(replace).delete(clear),
        )
        .route(
            "/v2.0/{collection}/{id}/tags/{tag}",
            get(check).put(add).delete(remove_one),
        )
}

struct Taggable {
    kind: &'static Kind,
    title: &'static str,
}

fn lookup(collection: &str) -> ApiResult<Taggable> {
    let (kind, title) = match collection {
        "networks" => (&networks::KIND, "Network"),
        "subnets" => (&subnets::KIND, "Subnet"),
        "subnetpools" => (&subnetpools::KIND, "Subnetpool"),
        "ports" => (&ports::KIND, "Port"),
        "security-groups" => (&security_groups::KIND, "Security Group"),
        "routers" => (&routers::KIND, "Router"),
        "floatingips" => (&floatingips::KIND, "Floating IP"),
        _ => return Err(common::hidden_not_found()),
    };
    Ok(Taggable { kind, title })
}

fn owner_or_admin(ctx: &Context, obj: &Obj) -> bool {
    ctx.is_admin()
        || obj
            .get("project_id")
            .and_then(Value::as_str)
            .is_some_and(|p| ctx.owns(p))
}

/// Whether the caller may see the resource (and so read its tags).
async fn readable(
    st: &ApiState,
    conn: &mut sqlx::AnyConnection,
    ctx: &Context,
    collection: &str,
    obj: &Obj,
) -> ApiResult<bool> {
    if owner_or_admin(ctx, obj) {
        return Ok(true);
    }
    Ok(match collection {
        "networks" => networks::visible(ctx, obj),
        "subnetpools" => subnetpools::visible(ctx, obj),
        "security-groups" => security_groups::visibility(ctx, obj).0,
        // Routers and floating IPs are never shared: the owner check above decides.
        "routers" | "floatingips" => false,
        "subnets" | "ports" => {
            let net_id = obj
                .get("network_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match db::get(&mut *conn, &networks::KIND, net_id).await? {
                Some(net) if collection == "subnets" => subnets::visible(st, ctx, &net, obj),
                // Ports are visible to the owner of their network, as Neutron's
                // admin_or_network_owner rule says.
                Some(net) => owner_or_admin(ctx, &net),
                None => false,
            }
        }
        _ => false,
    })
}

fn tags_of(obj: &Obj) -> Vec<String> {
    obj.get("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Neutron's `validate_tag` (neutron/extensions/tagging.py): neutron-lib's `validate_string`
/// with `MAX_TAG_LEN`, as `InvalidInput`. An empty tag is a valid string there, so it is
/// accepted here too.
fn validate_tag(t: &str) -> ApiResult<()> {
    if t.chars().count() > MAX_TAG_LEN {
        return Err(ApiError::invalid_input(format!(
            "'{t}' exceeds maximum length of {MAX_TAG_LEN}"
        )));
    }
    // Deliberately stricter than Neutron, as every other one-line string of the API.
    common::check_line("tags", t)
}

/// Neutron's `validate_tags`: the body is an object with `tags`, a list without duplicates
/// (checked first, over any items) whose items are valid tags. Returns the list.
fn validate_tags(body: &Value) -> ApiResult<Vec<String>> {
    let Some(list) = body.get("tags") else {
        return Err(ApiError::invalid_input("Invalid tags body"));
    };
    let Value::Array(items) = list else {
        return Err(ApiError::invalid_input(format!(
            "'{}' is not a list",
            attrs::display(list)
        )));
    };
    let mut dups: Vec<&Value> = Vec::new();
    for (i, t) in items.iter().enumerate() {
        if items[..i].contains(t) && !dups.contains(&t) {
            dups.push(t);
        }
    }
    if !dups.is_empty() {
        let dups: Vec<String> = dups.into_iter().map(attrs::display).collect();
        return Err(ApiError::invalid_input(format!(
            "Duplicate items in the list: '{}'",
            dups.join(", ")
        )));
    }
    items
        .iter()
        .map(|t| match t {
            Value::String(s) => validate_tag(s).map(|()| s.clone()),
            other => Err(ApiError::invalid_input(format!(
                "'{}' is not a valid string",
                attrs::display(other)
            ))),
        })
        .collect()
}

/// Neutron's `validate_tags_limit`: `BadRequest` naming the collection (`security_groups`
/// with its underscore, as Neutron's resource name).
fn too_many_tags(kind: &Kind) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!(
            "Bad {} request: The number of tags exceed the per-resource limit of {MAX_TAGS}.",
            kind.table
        ),
    )
}

async fn load(
    st: &ApiState,
    ctx: &Context,
    collection: &str,
    id: &str,
) -> ApiResult<(Taggable, Obj)> {
    let t = lookup(collection)?;
    let mut conn = st.db.reader().acquire().await?;
    match db::get(&mut *conn, t.kind, id).await? {
        Some(o) if readable(st, &mut conn, ctx, collection, &o).await? => Ok((t, o)),
        _ => Err(ApiError::not_found(t.title, id)),
    }
}

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path((collection, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (_, obj) = load(&st, &ctx, &collection, &id).await?;
    Ok(common::ok("tags", json!(tags_of(&obj))))
}

async fn check(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path((collection, id, tag)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    validate_tag(&tag)?;
    let (_, obj) = load(&st, &ctx, &collection, &id).await?;
    if tags_of(&obj).contains(&tag) {
        Ok(common::no_content())
    } else {
        Err(tag_not_found(&tag))
    }
}

/// Neutron's `TagNotFound` (neutron/services/tag/tag_plugin.py raises it with the tag only).
fn tag_not_found(tag: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "TagNotFound",
        format!("Tag {tag} could not be found."),
    )
}

/// What a tag write does, which names the policy rule it needs.
#[derive(Clone, Copy)]
enum Verb {
    /// `PUT .../tags` and `PUT .../tags/{tag}`.
    Update,
    /// `DELETE .../tags` and `DELETE .../tags/{tag}`.
    Delete,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Update => "update",
            Verb::Delete => "delete",
        }
    }
}

/// The policy target of a tagged resource: the document plus what its rules look at, as the
/// resource's own handlers build it (`shared` as the caller sees it; the network's owner and
/// sharing for subnets and ports).
async fn policy_target(
    conn: &mut sqlx::AnyConnection,
    ctx: &Context,
    collection: &str,
    obj: &Obj,
) -> ApiResult<Obj> {
    Ok(match collection {
        "networks" | "subnetpools" => crate::rbac::caller_view(ctx, obj),
        "security-groups" => security_groups::target(obj, security_groups::visibility(ctx, obj).1),
        "subnets" | "ports" => {
            let net_id = obj
                .get("network_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match db::get(&mut *conn, &networks::KIND, net_id).await? {
                Some(net) => networks::network_target(&net, obj),
                None => obj.clone(),
            }
        }
        _ => obj.clone(),
    })
}

/// Applies `f` to the resource's tag list inside a write transaction, once the `verb` policy
/// allows it.
async fn mutate(
    st: &ApiState,
    ctx: &Context,
    collection: &str,
    id: &str,
    verb: Verb,
    f: impl FnOnce(&mut Vec<String>) -> ApiResult<()>,
) -> ApiResult<Vec<String>> {
    let t = lookup(collection)?;
    let mut tx = st.db.begin().await?;
    let mut obj = match db::get_for_update(&mut tx, &st.db, t.kind, id).await? {
        Some(o) if readable(st, &mut tx, ctx, collection, &o).await? => o,
        _ => return Err(ApiError::not_found(t.title, id)),
    };
    let target = policy_target(&mut tx, ctx, collection, &obj).await?;
    common::enforce(
        st,
        ctx,
        &format!("{}_{}:tags", verb.as_str(), t.kind.resource),
        &target,
    )?;
    let mut tags = tags_of(&obj);
    let before = tags.clone();
    f(&mut tags)?;
    if tags.len() > MAX_TAGS {
        return Err(too_many_tags(t.kind));
    }
    if tags != before {
        obj.insert("tags".into(), json!(tags));
        db::save(&mut tx, t.kind, &mut obj).await?;
    }
    st.db.commit(tx).await?;
    Ok(tags)
}

async fn replace(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path((collection, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let new = validate_tags(&common::parse_json(&body)?)?;
    let tags = mutate(&st, &ctx, &collection, &id, Verb::Update, |tags| {
        *tags = new;
        Ok(())
    })
    .await?;
    Ok(common::ok("tags", json!(tags)))
}

async fn add(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path((collection, id, tag)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    validate_tag(&tag)?;
    mutate(&st, &ctx, &collection, &id, Verb::Update, |tags| {
        if !tags.contains(&tag) {
            tags.push(tag);
        }
        Ok(())
    })
    .await?;
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::CREATED,
    ))
}

async fn clear(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path((collection, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    mutate(&st, &ctx, &collection, &id, Verb::Delete, |tags| {
        tags.clear();
        Ok(())
    })
    .await?;
    Ok(common::no_content())
}

async fn remove_one(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path((collection, id, tag)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    validate_tag(&tag)?;
    mutate(
        &st,
        &ctx,
        &collection,
        &id,
        Verb::Delete,
        move |tags| match tags.iter().position(|x| *x == tag) {
            Some(p) => {
                tags.remove(p);
                Ok(())
            }
            None => Err(tag_not_found(&tag)),
        },
    )
    .await?;
    Ok(common::no_content())
}
