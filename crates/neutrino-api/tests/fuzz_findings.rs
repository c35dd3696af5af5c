//! What the fuzz and reader-role end-to-end tests (tests/e2e/test_fuzz.py,
//! tests/e2e/test_reader_role.py) found, each checked as a client sees it, on SQLite and
//! (when configured) PostgreSQL, with the Neutron source its expectation comes from.
mod support;

use serde_json::{Value, json};
use support::{TestServer, err_type, id};

const P: &str = "member:p1";
const READER: &str = "reader:p1";
const OTHER: &str = "member:p2";

fn message(b: &Value) -> &str {
    b["NeutronError"]["message"].as_str().unwrap_or("")
}

/// Asserts an error answer: status, `type` and `message`.
#[track_caller]
fn assert_error(got: &(u16, Value), status: u16, kind: &str, msg: &str) {
    let (s, b) = got;
    assert_eq!(
        (*s, err_type(b), message(b)),
        (status, kind, msg),
        "full body: {b}"
    );
}

async fn tags(srv: &TestServer, path: &str) -> Value {
    let (s, b) = srv.get(&format!("{path}/tags"), "admin").await;
    assert_eq!(s, 200, "{path}: {b}");
    b["tags"].clone()
}

/// Tag values, with neutron-lib's validators as neutron/extensions/tagging.py applies them:
/// `validate_tags` (a body with `tags`, `type:list_of_unique_strings` with MAX_TAG_LEN 255)
/// for `PUT .../tags`, `validate_tag` for the tag in the path of `PUT`/`GET`/`DELETE
/// .../tags/{tag}`, both `InvalidInput`; `validate_tags_limit` (`BadRequest` naming the
/// collection); the plugin's `TagNotFound`. A refused request changes nothing.
async fn tag_values(srv: &TestServer) {
    let net = id(&srv.network(P, json!({})).await);
    let path = format!("/v2.0/networks/{net}");
    let (s, b) = srv
        .put(&format!("{path}/tags"), P, json!({"tags": ["keep"]}))
        .await;
    assert_eq!(s, 200, "{b}");

    let long = "x".repeat(256);
    let invalid = |m: &str| format!("Invalid input for operation: {m}.");
    let refused = [
        (
            json!({"tags": ["a", "a"]}),
            "Duplicate items in the list: 'a'",
        ),
        (
            json!({"tags": ["a", "b", "c", "b", "a", "a"]}),
            "Duplicate items in the list: 'b, a'",
        ),
        (json!({"tags": "abc"}), "'abc' is not a list"),
        (json!({"tags": [5]}), "'5' is not a valid string"),
        (json!({"tag": ["a"]}), "Invalid tags body"),
        (json!(["a"]), "Invalid tags body"),
        (
            json!({"tags": ["ok", long]}),
            &format!("'{long}' exceeds maximum length of 255"),
        ),
    ];
    for (body, msg) in &refused {
        let got = srv.put(&format!("{path}/tags"), P, body.clone()).await;
        assert_error(&got, 400, "InvalidInput", &invalid(msg));
    }
    // Values are checked before the resource is looked up.
    let got = srv
        .put(
            "/v2.0/networks/6f2c3c8e-8a9b-4c1d-9e0f-0a1b2c3d4e5f/tags",
            P,
            json!({"tags": ["a", "a"]}),
        )
        .await;
    assert_error(
        &got,
        400,
        "InvalidInput",
        &invalid("Duplicate items in the list: 'a'"),
    );
    let many: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
    let got = srv
        .put(&format!("{path}/tags"), P, json!({"tags": many}))
        .await;
    assert_error(
        &got,
        400,
        "BadRequest",
        "Bad networks request: The number of tags exceed the per-resource limit of 50.",
    );
    // The tag in the path.
    let too_long = invalid(&format!("'{long}' exceeds maximum length of 255"));
    for method in ["PUT", "GET", "DELETE"] {
        let got = srv
            .call(method, &format!("{path}/tags/{long}"), P, None)
            .await;
        assert_error(&got, 400, "InvalidInput", &too_long);
    }
    // NUL and control characters: Neutron checks none (MySQL stores them), but PostgreSQL
    // cannot hold NUL, so both engines refuse them, in the path and in the body.
    for tag in ["%00", "a%00b", "a%0Ab", "%1B%5B31m"] {
        let (s, b) = srv.put(&format!("{path}/tags/{tag}"), P, Value::Null).await;
        assert_eq!(s, 400, "PUT tags/{tag}: {b}");
    }
    for tag in ["a\u{0}b", "a\nb", "\u{1b}[31m"] {
        let (s, b) = srv
            .put(&format!("{path}/tags"), P, json!({"tags": [tag]}))
            .await;
        assert_eq!(s, 400, "PUT tags [{tag:?}]: {b}");
    }
    assert_eq!(
        tags(srv, &path).await,
        json!(["keep"]),
        "refusals changed tags"
    );

    // What Neutron accepts: 255 characters, and the empty string (a valid string).
    let longest = "y".repeat(255);
    let (s, b) = srv
        .put(&format!("{path}/tags/{longest}"), P, Value::Null)
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = srv
        .call("GET", &format!("{path}/tags/{longest}"), P, None)
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .put(&format!("{path}/tags"), P, json!({"tags": ["", "b"]}))
        .await;
    assert_eq!((s, &b["tags"]), (200, &json!(["", "b"])), "{b}");
    let got = srv.delete(&format!("{path}/tags/never-set"), P).await;
    assert_error(
        &got,
        404,
        "TagNotFound",
        "Tag never-set could not be found.",
    );
    let got = srv.get(&format!("{path}/tags/never-set"), P).await;
    assert_error(
        &got,
        404,
        "TagNotFound",
        "Tag never-set could not be found.",
    );
}

on_both_stores!(tag_values, "", tag_values_sqlite, tag_values_postgres);
