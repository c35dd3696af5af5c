//! The Tempest flow against PostgreSQL (a fresh database per test), when
//! `NEUTRINO_TEST_PG_URL` is set. With `NEUTRINO_REQUIRE_PG=1` a missing URL is a failure.

mod common;

use neutrino_core::Db;
use sqlx::Connection;

/// Replaces the database name of a PostgreSQL URL.
fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{db}{query}", &base[..host_end])
}

#[tokio::test]
async fn tempest_dynamic_credentials_flow_on_postgres() {
    let Ok(url) = std::env::var("NEUTRINO_TEST_PG_URL") else {
        assert!(
            std::env::var("NEUTRINO_REQUIRE_PG").as_deref() != Ok("1"),
            "NEUTRINO_REQUIRE_PG=1 but NEUTRINO_TEST_PG_URL is unset: set it to \
             postgresql://USER@HOST:PORT/DB"
        );
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    sqlx::any::install_default_drivers();
    let name = format!("neutrino_identity_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::AnyConnection::connect(&with_db(&url, "postgres"))
        .await
        .expect("connect to the postgres maintenance database");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let db = Db::connect(&with_db(&url, &name)).await.unwrap();
    db.migrate().await.unwrap();
    // Run the scenario in its own task so the database is dropped even when it fails.
    let scenario = tokio::spawn({
        let db = db.clone();
        async move {
            let srv = common::serve(db, 3600).await;
            // Bootstrap again, concurrently with a service user: idempotent under races.
            let (a, b) = tokio::join!(
                srv.idn.bootstrap(common::ADMIN_PW),
                srv.idn.ensure_service_user("neutrino-agent", "pw")
            );
            assert!(!a.unwrap());
            b.unwrap();
            common::tempest_flow(&srv).await;
        }
    })
    .await;
    db.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    if let Err(e) = scenario {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[test]
fn database_name_is_replaced() {
    assert_eq!(
        with_db("postgresql://postgres@127.0.0.1:5432/x", "postgres"),
        "postgresql://postgres@127.0.0.1:5432/postgres"
    );
    assert_eq!(
        with_db("postgresql://u:p@h/x?sslmode=disable", "y"),
        "postgresql://u:p@h/y?sslmode=disable"
    );
    assert_eq!(with_db("postgresql://h:5432", "y"), "postgresql://h:5432/y");
}
