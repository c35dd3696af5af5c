//! The store: SQLite (embedded default, WAL) or PostgreSQL (several servers share it).
//!
//! Owns connection set-up, forward-only migrations, and the generic resource store: every
//! API resource is a row holding its JSON document (`body`) plus the few columns that the
//! database must constrain or index (foreign keys, unique MAC per network, ...). Every
//! mutation goes through [`create`], [`save`] or [`remove`], which bump `revision_number`
//! and append to the `changes` log in the caller's transaction, so agents can resume from
//! a sequence number and never miss a change.
//!
//! Invariants are enforced by constraints, never by check-then-insert. This module must never
//! hold a transaction open across anything but SQL, and never send a 5xx body with SQL text.
//!
//! Change sequence numbers follow commit order on both engines (agents resume from a sequence
//! number, so a change committed "behind" one already seen would be lost): SQLite has one
//! writer; on PostgreSQL [`Db::commit`] renumbers the transaction's change rows under an
//! advisory lock just before COMMIT and sends `NOTIFY neutrino_changes` with the highest one.
//! Every PostgreSQL [`Db`] also LISTENs on that channel, so [`Db::watch_commits`] wakes for
//! commits made by any server sharing the database.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, Executor, Row};

use crate::error::{ApiError, ApiResult};

/// A JSON object: the stored and wire form of a resource.
pub type Obj = Map<String, Value>;

/// A string attribute of a document, or `""` when it is absent, null or not a string.
pub fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or("")
}

/// A write transaction.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Which SQL engine is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    read: AnyPool,
    write: AnyPool,
    backend: Backend,
    /// Highest change sequence known committed (by this process, or by another server
    /// sharing the PostgreSQL database, through LISTEN); waiters watch it.
    committed: tokio::sync::watch::Sender<i64>,
    /// The PostgreSQL LISTEN task, stopped on close or drop.
    listener: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut l) = self.listener.lock()
            && let Some(h) = l.take()
        {
            h.abort();
        }
    }
}

/// PostgreSQL NOTIFY channel announcing committed changes; the payload is the highest
/// change sequence of the committing transaction.
pub const CHANGES_CHANNEL: &str = "neutrino_changes";

/// Advisory lock key serialising the numbering of change rows on PostgreSQL ("neutrino").
const CHANGES_LOCK_KEY: i64 = 0x6e65_7574_7269_6e6f;

/// Errors from opening or migrating the store.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The connection URL is not SQLite or PostgreSQL.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgresql://...")]
    Url(String),
    /// Connecting failed.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// URL without password.
        url: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

macro_rules! migrations {
    ($( $v:literal $dir:literal $name:literal ),* $(,)?) => {
        &[ $( ($v, $name, include_str!(concat!("../migrations/", $dir, "/", stringify!($v), "_", $name, ".sql"))) ),* ]
    };
}

/// Forward-only migrations, per backend: (version, name, SQL). Append, never edit. SQL that is
/// the same on both engines lives once in `migrations/common/`; only what differs (sequence
/// types, JSON functions, commit ordering) has a per-engine file.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = migrations!(
    1 "sqlite" "core", 2 "common" "identity", 3 "common" "ml2", 4 "common" "security_groups",
    5 "common" "rbac", 6 "sqlite" "agents", 7 "common" "l3", 8 "common" "metadata",
    9 "common" "provisioning", 10 "common" "list_indexes",
);
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = migrations!(
    1 "postgres" "core", 2 "common" "identity", 3 "common" "ml2", 4 "common" "security_groups",
    5 "common" "rbac", 6 "postgres" "agents", 7 "common" "l3", 8 "common" "metadata",
    9 "common" "provisioning", 10 "common" "list_indexes",
);

type BoxFut<'c> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

fn sqlite_pragmas(conn: &mut AnyConnection) -> BoxFut<'_> {
    Box::pin(async move {
        for p in [
            "PRAGMA journal_mode = WAL",
            "PRAGMA foreign_keys = ON",
            "PRAGMA busy_timeout = 10000",
            "PRAGMA synchronous = NORMAL",
        ] {
            conn.execute(p).await?;
        }
        Ok(())
    })
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

impl Db {
    /// Opens the store at `url` (`sqlite://path` or `postgresql://...`). Does not migrate.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(DbError::Url(url.to_string()));
        };
        let mut url = url.to_string();
        if backend == Backend::Sqlite && !url.contains("mode=") {
            url.push_str(if url.contains('?') {
                "&mode=rwc"
            } else {
                "?mode=rwc"
            });
        }
        let connect_err = |source| DbError::Connect {
            url: redact(&url),
            source,
        };
        let opts = AnyConnectOptions::from_str(&url).map_err(connect_err)?;
        let (read, write) = match backend {
            Backend::Sqlite => {
                // One writer connection: SQLite serialises writers anyway, and queueing in the
                // pool is cheaper than SQLITE_BUSY retries. Readers use WAL snapshots.
                let write = AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|c, _| sqlite_pragmas(c))
                    .connect_with(opts.clone())
                    .await
                    .map_err(connect_err)?;
                let read = AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|c, _| sqlite_pragmas(c))
                    .connect_with(opts)
                    .await
                    .map_err(connect_err)?;
                (read, write)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(opts)
                    .await
                    .map_err(connect_err)?;
                (pool.clone(), pool)
            }
        };
        let (committed, _) = tokio::sync::watch::channel(0);
        let db = Db {
            inner: Arc::new(Inner {
                read,
                write,
                backend,
                committed,
                listener: std::sync::Mutex::new(None),
            }),
        };
        if backend == Backend::Postgres {
            let task = tokio::spawn(listen_loop(url, Arc::downgrade(&db.inner)));
            if let Ok(mut l) = db.inner.listener.lock() {
                *l = Some(task.abort_handle());
            }
        }
        Ok(db)
    }

    /// Applies pending migrations (`neutrino db upgrade`).
    pub async fn migrate(&self) -> Result<(), DbError> {
        let list = match self.inner.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        let migrations: Vec<Migration> = list
            .iter()
            .map(|(v, name, sql)| {
                Migration::new(
                    *v,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    Cow::Borrowed(*sql),
                    false,
                )
            })
            .collect();
        let migrator = Migrator {
            migrations: Cow::Owned(migrations),
            ignore_missing: false,
            locking: true,
            no_tx: false,
        };
        migrator.run(&self.inner.write).await?;
        Ok(())
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The pool for reads outside a transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.inner.read
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> ApiResult<Tx> {
        let tx = match self.inner.backend {
            Backend::Sqlite => self.inner.write.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.inner.write.begin().await?,
        };
        Ok(tx)
    }

    /// Commits and wakes change watchers in this process (and, on PostgreSQL, in every
    /// server listening on the database).
    pub async fn commit(&self, mut tx: Tx) -> ApiResult<()> {
        if self.inner.backend == Backend::Postgres {
            sequence_changes(&mut tx).await?;
        }
        tx.commit().await?;
        let latest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes")
            .fetch_one(&self.inner.read)
            .await
            .unwrap_or(0);
        self.inner.committed.send_if_modified(|v| {
            if latest > *v {
                *v = latest;
                true
            } else {
                false
            }
        });
        Ok(())
    }

    /// Subscribes to "something was committed" notifications (value: highest known seq).
    pub fn watch_commits(&self) -> tokio::sync::watch::Receiver<i64> {
        self.inner.committed.subscribe()
    }

    /// `" FOR UPDATE"` where the engine has row locks; SQLite serialises writers instead.
    pub fn for_update(&self) -> &'static str {
        match self.inner.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// Closes the pools (and stops listening for other servers' commits).
    pub async fn close(&self) {
        if let Ok(mut l) = self.inner.listener.lock()
            && let Some(h) = l.take()
        {
            h.abort();
        }
        self.inner.read.close().await;
        self.inner.write.close().await;
    }
}

/// PostgreSQL, just before COMMIT: gives this transaction's change rows fresh sequence
/// numbers under a transaction-scoped advisory lock and announces the highest one.
///
/// Why: a BIGSERIAL value is drawn at INSERT but transactions commit in any order, so without
/// this a watcher could see 11, advance past 10, and never see 10 (committed a moment later).
/// Holding the lock from renumbering to the end of COMMIT makes sequence order commit order.
/// Deferred constraints are checked first, so the advisory lock is the last lock the
/// transaction takes and cannot close a deadlock cycle. Transactions that logged nothing
/// (token issuance, reads) skip all of it.
async fn sequence_changes(tx: &mut Tx) -> ApiResult<()> {
    let xid: Option<i64> = sqlx::query_scalar("SELECT txid_current_if_assigned()")
        .fetch_one(&mut **tx)
        .await?;
    let Some(xid) = xid else {
        return Ok(());
    };
    let logged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM changes WHERE txid = $1")
        .bind(xid)
        .fetch_one(&mut **tx)
        .await?;
    if logged == 0 {
        return Ok(());
    }
    sqlx::query("SET CONSTRAINTS ALL IMMEDIATE")
        .execute(&mut **tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHANGES_LOCK_KEY)
        .execute(&mut **tx)
        .await?;
    let top: Option<i64> = sqlx::query_scalar(
        "WITH mine AS MATERIALIZED (SELECT seq FROM changes WHERE txid = $1 ORDER BY seq), \
         renum AS MATERIALIZED (SELECT seq AS old, nextval(pg_get_serial_sequence('changes', 'seq')) AS new FROM mine), \
         moved AS (UPDATE changes c SET seq = renum.new FROM renum WHERE c.seq = renum.old RETURNING c.seq) \
         SELECT MAX(seq) FROM moved",
    )
    .bind(xid)
    .fetch_one(&mut **tx)
    .await?;
    if let Some(top) = top {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(top.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Raises the watch value to `seq` when it is higher.
fn bump(inner: &Inner, seq: i64) {
    inner.committed.send_if_modified(|v| {
        if seq > *v {
            *v = seq;
            true
        } else {
            false
        }
    });
}

/// LISTENs on [`CHANGES_CHANNEL`] for as long as the store is open, feeding other servers'
/// commits into the watch channel. On (re)connection it reads the highest sequence, since
/// notifications sent while disconnected are lost.
async fn listen_loop(url: String, inner: std::sync::Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => match listener.listen(CHANGES_CHANNEL).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    let mut catch_up = true;
                    loop {
                        let Some(strong) = inner.upgrade() else {
                            return;
                        };
                        if catch_up {
                            let latest: Result<i64, _> =
                                sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes")
                                    .fetch_one(&strong.read)
                                    .await;
                            if let Ok(latest) = latest {
                                bump(&strong, latest);
                            }
                            catch_up = false;
                        }
                        drop(strong);
                        match listener.try_recv().await {
                            Ok(Some(n)) => {
                                let Some(strong) = inner.upgrade() else {
                                    return;
                                };
                                match n.payload().parse::<i64>() {
                                    Ok(seq) => bump(&strong, seq),
                                    Err(_) => catch_up = true,
                                }
                            }
                            // The connection dropped; the next try_recv reconnects. Anything
                            // announced meanwhile is lost, so re-read the head.
                            Ok(None) => catch_up = true,
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN for changes failed; reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "LISTEN for changes failed; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot connect to LISTEN for changes; retrying"),
        }
        if inner.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Describes how a resource kind is stored.
#[derive(Debug)]
pub struct Kind {
    /// Singular name, as in the API body key (`network`).
    pub resource: &'static str,
    /// Table name.
    pub table: &'static str,
    /// Body keys mirrored into same-named columns (string or NULL) for constraints and indexes.
    pub columns: &'static [&'static str],
}

/// Current time as Neutron prints it (`2026-11-21T12:50:09Z`).
pub fn now() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

/// Formats a UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A fresh resource id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn column_value(obj: &Obj, key: &str) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => Some(v.to_string()),
    }
}

fn rev_of(obj: &Obj) -> i64 {
    obj.get("revision_number")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

async fn log_change(tx: &mut AnyConnection, kind: &Kind, obj: &Obj, op: &str) -> ApiResult<()> {
    let id = column_value(obj, "id").unwrap_or_default();
    let project = column_value(obj, "project_id").unwrap_or_default();
    sqlx::query(
        "INSERT INTO changes (resource, resource_id, op, revision_number, project_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(kind.resource)
    .bind(id)
    .bind(op)
    .bind(rev_of(obj))
    .bind(project)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Inserts a new resource: sets `revision_number` 1 and timestamps, logs the change.
/// Constraint violations come back as `Err(sqlx::Error)` inside `ApiError::internal` unless
/// the caller maps them first with [`insert_raw`].
pub async fn create(tx: &mut AnyConnection, kind: &Kind, obj: &mut Obj) -> ApiResult<()> {
    insert_raw(tx, kind, obj).await.map_err(ApiError::from)?;
    log_change(tx, kind, obj, "create").await
}

/// Like [`create`] but returns the raw database error so callers can map constraint
/// violations (unique MAC, foreign keys) to the right API error. Logs nothing.
pub async fn insert_raw(
    tx: &mut AnyConnection,
    kind: &Kind,
    obj: &mut Obj,
) -> Result<(), sqlx::Error> {
    let ts = now();
    obj.insert("revision_number".into(), Value::from(1));
    obj.entry("created_at")
        .or_insert_with(|| Value::String(ts.clone()));
    obj.insert("updated_at".into(), Value::String(ts));
    let mut cols = String::from("id, project_id, revision_number, body");
    let mut vals = String::from("$1, $2, $3, $4");
    for (i, c) in kind.columns.iter().enumerate() {
        cols.push_str(", ");
        cols.push_str(c);
        vals.push_str(&format!(", ${}", i + 5));
    }
    let sql = format!("INSERT INTO {} ({cols}) VALUES ({vals})", kind.table);
    let body = Value::Object(obj.clone()).to_string();
    let mut q = sqlx::query(&sql)
        .bind(column_value(obj, "id"))
        .bind(column_value(obj, "project_id").unwrap_or_default())
        .bind(1_i64)
        .bind(body);
    for c in kind.columns {
        q = q.bind(column_value(obj, c));
    }
    q.execute(&mut *tx).await?;
    Ok(())
}

/// Logs a creation done with [`insert_raw`].
pub async fn log_create(tx: &mut AnyConnection, kind: &Kind, obj: &Obj) -> ApiResult<()> {
    log_change(tx, kind, obj, "create").await
}

/// Writes back a changed resource whose stored revision is `obj.revision_number`: bumps the
/// revision, sets `updated_at`, logs the change. Fails with a 412-style conflict if another
/// writer got there first (the caller decides whether to retry).
pub async fn save(tx: &mut AnyConnection, kind: &Kind, obj: &mut Obj) -> ApiResult<()> {
    let old = rev_of(obj);
    let new = old + 1;
    obj.insert("revision_number".into(), Value::from(new));
    obj.insert("updated_at".into(), Value::String(now()));
    let mut sets = String::from("revision_number = $1, body = $2, project_id = $3");
    for (i, c) in kind.columns.iter().enumerate() {
        sets.push_str(&format!(", {c} = ${}", i + 4));
    }
    let n = kind.columns.len();
    let sql = format!(
        "UPDATE {} SET {sets} WHERE id = ${} AND revision_number = ${}",
        kind.table,
        n + 4,
        n + 5
    );
    let body = Value::Object(obj.clone()).to_string();
    let mut q = sqlx::query(&sql)
        .bind(new)
        .bind(body)
        .bind(column_value(obj, "project_id").unwrap_or_default());
    for c in kind.columns {
        q = q.bind(column_value(obj, c));
    }
    let res = q
        .bind(column_value(obj, "id"))
        .bind(old)
        .execute(&mut *tx)
        .await?;
    if res.rows_affected() != 1 {
        return Err(ApiError::conflict(
            "RevisionConflict",
            "The resource was changed concurrently; retry the request.",
        ));
    }
    log_change(tx, kind, obj, "update").await
}

/// Deletes a resource and logs it.
pub async fn remove(tx: &mut AnyConnection, kind: &Kind, obj: &Obj) -> ApiResult<()> {
    let sql = format!("DELETE FROM {} WHERE id = $1", kind.table);
    sqlx::query(&sql)
        .bind(column_value(obj, "id"))
        .execute(&mut *tx)
        .await?;
    log_change(tx, kind, obj, "delete").await
}

pub(crate) fn parse_body(raw: &str) -> ApiResult<Obj> {
    match serde_json::from_str::<Value>(raw)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::internal("stored body is not an object")),
    }
}

/// Loads one resource by id.
pub async fn get<'c, E>(ex: E, kind: &Kind, id: &str) -> ApiResult<Option<Obj>>
where
    E: Executor<'c, Database = sqlx::Any>,
{
    let sql = format!("SELECT body FROM {} WHERE id = $1", kind.table);
    let row = sqlx::query(&sql).bind(id).fetch_optional(ex).await?;
    match row {
        Some(r) => Ok(Some(parse_body(&r.try_get::<String, _>(0)?)?)),
        None => Ok(None),
    }
}

/// Loads one resource by id inside a write transaction, locking the row where possible.
pub async fn get_for_update(
    tx: &mut AnyConnection,
    db: &Db,
    kind: &Kind,
    id: &str,
) -> ApiResult<Option<Obj>> {
    let sql = format!(
        "SELECT body FROM {} WHERE id = $1{}",
        kind.table,
        db.for_update()
    );
    let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await?;
    match row {
        Some(r) => Ok(Some(parse_body(&r.try_get::<String, _>(0)?)?)),
        None => Ok(None),
    }
}

/// Loads every resource of a kind, optionally where `column = value` (column must be one of
/// `id`, `project_id` or the kind's mirrored columns). Ordered by id.
pub async fn list<'c, E>(ex: E, kind: &Kind, filter: Option<(&str, &str)>) -> ApiResult<Vec<Obj>>
where
    E: Executor<'c, Database = sqlx::Any>,
{
    let rows = match filter {
        Some((col, val)) => {
            debug_assert!(
                col == "id" || col == "project_id" || kind.columns.contains(&col),
                "unindexed filter column {col}"
            );
            let sql = format!(
                "SELECT body FROM {} WHERE {col} = $1 ORDER BY id",
                kind.table
            );
            sqlx::query(&sql).bind(val).fetch_all(ex).await?
        }
        None => {
            let sql = format!("SELECT body FROM {} ORDER BY id", kind.table);
            sqlx::query(&sql).fetch_all(ex).await?
        }
    };
    rows.iter()
        .map(|r| parse_body(&r.try_get::<String, _>(0)?))
        .collect()
}

/// Counts resources of a kind owned by a project (for quotas).
pub async fn count_by_project<'c, E>(ex: E, kind: &Kind, project_id: &str) -> ApiResult<i64>
where
    E: Executor<'c, Database = sqlx::Any>,
{
    let sql = format!("SELECT COUNT(*) FROM {} WHERE project_id = $1", kind.table);
    Ok(sqlx::query_scalar(&sql)
        .bind(project_id)
        .fetch_one(ex)
        .await?)
}

/// True when `e` is a unique-constraint violation (optionally on a constraint whose name or
/// message mentions `needle`).
pub fn is_unique_violation(e: &sqlx::Error, needle: Option<&str>) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let unique = matches!(d.kind(), sqlx::error::ErrorKind::UniqueViolation)
                || d.message().contains("UNIQUE constraint failed")
                || d.code().as_deref() == Some("23505");
            unique
                && needle.is_none_or(|n| {
                    d.message().contains(n) || d.constraint().is_some_and(|c| c.contains(n))
                })
        }
        _ => false,
    }
}

/// True when `e` is a foreign-key violation.
pub fn is_fk_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            matches!(d.kind(), sqlx::error::ErrorKind::ForeignKeyViolation)
                || d.message().contains("FOREIGN KEY constraint failed")
                || d.code().as_deref() == Some("23503")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format_is_neutrons() {
        let t = time::OffsetDateTime::from_unix_timestamp(0).unwrap();
        assert_eq!(format_time(t), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgresql://u:secret@h/db"),
            "postgresql://***@h/db"
        );
    }
}
