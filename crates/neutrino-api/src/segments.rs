//! `/v2.0/segments`: the `segment` extension — list, show, create, update, delete.
//!
//! Owns the HTTP side of network segments: parsing, policy (`*_segment` rules, admin-only by
//! default), and the wire form (Neutron shows no `project_id` on segments). What a segment may
//! be, how its ID is reserved and what its deletion releases belong to [`crate::ml2`]; this
//! module must never allocate or free segmentation IDs itself. Every write is one transaction.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::Value;

use neutrino_core::db::{self, Obj};
use neutrino_core::list::{ListQuery, Spec};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, Ty, attr};
use crate::ml2::{self, KIND, NewSegment};
use crate::{ApiState, common};

/// Segment attributes (neutron-lib `segment` definition plus standard-attr-description).
pub const ATTRS: &[Attr] = &[
    attr("network_id", true, false, Ty::Uuid, D::Required),
    attr("network_type", true, false, Ty::Str(32), D::Required),
    attr("physical_network", true, false, Ty::StrOrNull(64), D::Null),
    attr("segmentation_id", true, false, Ty::IntOrNull, D::Null),
    attr("name", true, true, Ty::StrOrNull(255), D::Null),
    attr("description", true, true, Ty::Str(255), D::Str("")),
    attr("project_id", true, false, Ty::Str(255), D::None),
    attr("tenant_id", true, false, Ty::Str(255), D::None),
];

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/segments", get(list).post(create))
        .route("/v2.0/segments/{id}", get(show).put(update).delete(delete))
}

/// The wire form of a stored segment: everything but the owner, which Neutron keeps invisible.
pub fn render(seg: &Obj) -> Obj {
    let mut out = seg.clone();
    out.remove("project_id");
    out.remove("tenant_id");
    out
}

fn text(obj: &Obj, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_string)
}

/// neutron-lib's attribute map of the segment, as far as listing goes: sort keys and the
/// filters whose values convert.
const LIST_SPEC: Spec = Spec {
    sort_keys: &[
        "id",
        "network_id",
        "physical_network",
        "network_type",
        "segmentation_id",
        "name",
    ],
    bools: &[],
    ints: &["segmentation_id"],
};

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut query = ListQuery::parse(q.as_deref())?;
    query.check(&LIST_SPEC)?;
    let segs = db::list(st.db.reader(), &KIND, None).await?;
    let items: Vec<Obj> = segs
        .iter()
        .filter(|s| st.policy.check(&ctx, "get_segment", s))
        .map(render)
        .collect();
    let url = format!("{}/v2.0/segments", common::base_url(&headers));
    Ok(axum::Json(query.respond(items, "segments", &url)).into_response())
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let Some(seg) = db::get(st.db.reader(), &KIND, &id).await? else {
        return Err(ApiError::not_found("Segment", &id));
    };
    if !st.policy.check(&ctx, "get_segment", &seg) {
        // Same answer as for a missing segment: no existence leak.
        return Err(ApiError::not_found("Segment", &id));
    }
    Ok(common::ok(
        "segment",
        Value::Object(query.trim(render(&seg))),
    ))
}

async fn create(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = common::parse_create(&body, "segment", "segments")?;
    let mut prepared = Vec::with_capacity(req.items.len());
    for item in req.items {
        let mut obj = attrs::prepare_create(&[ATTRS], item)?;
        common::owner_for_create(&ctx, &mut obj)?;
        common::enforce(&st, &ctx, "create_segment", &obj)?;
        prepared.push(NewSegment {
            network_id: text(&obj, "network_id").unwrap_or_default(),
            network_type: text(&obj, "network_type"),
            physical_network: text(&obj, "physical_network"),
            segmentation_id: obj.get("segmentation_id").and_then(Value::as_i64),
            name: obj.get("name").cloned().unwrap_or(Value::Null),
            description: obj
                .get("description")
                .cloned()
                .unwrap_or(Value::String(String::new())),
        });
    }
    let mut tx = st.db.begin().await?;
    let mut out = Vec::with_capacity(prepared.len());
    for new in prepared {
        let doc = ml2::add_segment(&st, &mut tx, new).await?;
        out.push(Value::Object(render(&doc)));
    }
    st.db.commit(tx).await?;
    Ok(if req.bulk {
        common::created("segments", Value::Array(out))
    } else {
        common::created("segment", out.into_iter().next().unwrap_or_default())
    })
}

async fn update(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let expected = common::if_match(&headers)?;
    let changes = attrs::prepare_update(&[ATTRS], common::parse_update(&body, "segment")?)?;
    let mut tx = st.db.begin().await?;
    let Some(mut seg) = db::get_for_update(&mut tx, &st.db, &KIND, &id).await? else {
        return Err(ApiError::not_found("Segment", &id));
    };
    if !st.policy.check(&ctx, "get_segment", &seg) {
        // Same answer as for a missing segment: no existence leak.
        return Err(ApiError::not_found("Segment", &id));
    }
    common::check_revision(expected, &seg)?;
    common::enforce(&st, &ctx, "update_segment", &seg)?;
    let mut changed = false;
    for (k, v) in changes {
        if seg.get(&k) != Some(&v) {
            seg.insert(k, v);
            changed = true;
        }
    }
    if changed {
        db::save(&mut tx, &KIND, &mut seg).await?;
    }
    st.db.commit(tx).await?;
    Ok(common::ok("segment", Value::Object(render(&seg))))
}

async fn delete(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    common::reject_body(&body)?;
    let expected = common::if_match(&headers)?;
    let mut tx = st.db.begin().await?;
    // Read without a lock: ML2 locks the network first, then the segment (one lock order).
    let Some(seg) = db::get(&mut *tx, &KIND, &id).await? else {
        return Err(ApiError::not_found("Segment", &id));
    };
    if !st.policy.check(&ctx, "get_segment", &seg) {
        // Same answer as for a missing segment: no existence leak.
        return Err(ApiError::not_found("Segment", &id));
    }
    common::enforce(&st, &ctx, "delete_segment", &seg)?;
    let network_id = text(&seg, "network_id").unwrap_or_default();
    ml2::delete_segment(&st, &mut tx, &id, &network_id, expected).await?;
    st.db.commit(tx).await?;
    Ok(common::no_content())
}
