//! Neutron's list semantics, implemented once for every collection.
//!
//! Parses the query string of a `GET /v2.0/<collection>` (attribute filters with repeated keys
//! meaning OR, tag filters, `fields`, `sort_key`/`sort_dir`, `limit`/`marker`/`page_reverse`),
//! checks it against the collection's attribute map ([`Spec`]: sort keys, typed filter values,
//! Neutron's 400s), and answers it in one of two ways:
//!
//! - [`Pager`] over a [`Source`]: filters on indexed columns, the sort and the page reach SQL
//!   (`WHERE`, `ORDER BY`, keyset pagination `(sort keys, id) > marker's`, `LIMIT`), rows come
//!   in batches, the caller renders and policy-checks each, and the page fills from the rows
//!   that pass. A page or a lookup costs the same whatever the collection size.
//! - [`ListQuery::respond`] over documents already loaded (small or computed collections).
//!
//! Both give the same answer: SQL only ever narrows to a superset of what the in-memory
//! filters keep, and every row the caller renders is matched again here. Policy filtering is
//! the caller's; this module must never widen what a caller sees, and never put client text
//! into SQL except as bound parameters.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use sqlx::Row;

use crate::db::{Backend, Db, Kind, Obj};
use crate::error::{ApiError, ApiResult};

/// A parsed list request.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    /// Attribute filters: key → accepted values (any of them matches).
    pub filters: Vec<(String, Vec<String>)>,
    /// `fields=`: attributes to return (empty = all).
    pub fields: Vec<String>,
    /// Sort keys with direction (true = ascending).
    pub sort: Vec<(String, bool)>,
    /// Page size.
    pub limit: Option<usize>,
    /// Id after which (or before which, when reversed) the page starts.
    pub marker: Option<String>,
    /// Page backwards from the marker.
    pub page_reverse: bool,
    /// `tags`: must have all.
    pub tags: Vec<String>,
    /// `tags-any`: must have one.
    pub tags_any: Vec<String>,
    /// `not-tags`: must not have all.
    pub not_tags: Vec<String>,
    /// `not-tags-any`: must have none.
    pub not_tags_any: Vec<String>,
    /// The query pairs as received, for building links.
    raw: Vec<(String, String)>,
    /// Number of non-empty `sort_key` and `sort_dir` values, for Neutron's "must be same".
    sort_counts: (usize, usize),
}

/// What a collection's attribute map says about listing it (neutron-lib's `is_sort_key` and
/// the `convert_to` of filterable attributes).
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Attributes accepted as `sort_key` (`tenant_id` and `project_id` stand for each
    /// other, as `populate_project_info` makes them).
    pub sort_keys: &'static [&'static str],
    /// Filters converted with `convert_to_boolean`.
    pub bools: &'static [&'static str],
    /// Filters converted with `convert_to_int`.
    pub ints: &'static [&'static str],
}

/// Neutron's `strutils.bool_from_string(strict=True)`.
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// Python's `int()` on a string: optional sign, digits, surrounding blanks, `_` separators.
fn parse_int(v: &str) -> Option<i64> {
    let t = v.trim();
    if t.starts_with('_') || t.ends_with('_') || t.contains("__") {
        return None;
    }
    t.replace('_', "").parse::<i64>().ok()
}

/// A Python list of strings as `%s` prints it (`['a', 'b']`), for Neutron's messages.
fn py_list(items: &[&str]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", inner.join(", "))
}

fn split_tags(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl ListQuery {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> ApiResult<Self> {
        let mut q = ListQuery::default();
        let mut sort_keys = Vec::new();
        let mut sort_dirs = Vec::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let (k, v) = (k.into_owned(), v.into_owned());
            q.raw.push((k.clone(), v.clone()));
            match k.as_str() {
                "fields" => q.fields.extend(v.split(',').map(|s| s.trim().to_string())),
                // Empty values do not count (Neutron's `list_args`).
                "sort_key" if v.is_empty() => {}
                "sort_key" => sort_keys.push(v),
                "sort_dir" if v.is_empty() => {}
                "sort_dir" => match v.as_str() {
                    "asc" => sort_dirs.push(true),
                    "desc" => sort_dirs.push(false),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "{} is invalid value for sort_dirs, valid value is 'asc' and 'desc'",
                            py_list(&[v.as_str()])
                        )));
                    }
                },
                "limit" => {
                    let n: i64 = v.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "Limit must be an integer 0 or greater and not '{v}'"
                        ))
                    })?;
                    if n < 0 {
                        return Err(ApiError::bad_request(format!(
                            "Limit must be an integer 0 or greater and not '{v}'"
                        )));
                    }
                    // limit=0 means "no limit" in Neutron.
                    q.limit = usize::try_from(n).ok().filter(|n| *n > 0);
                }
                "marker" => q.marker = Some(v),
                "page_reverse" => q.page_reverse = v.eq_ignore_ascii_case("true"),
                "tags" => q.tags.extend(split_tags(&v)),
                "tags-any" => q.tags_any.extend(split_tags(&v)),
                "not-tags" => q.not_tags.extend(split_tags(&v)),
                "not-tags-any" => q.not_tags_any.extend(split_tags(&v)),
                _ => match q.filters.iter_mut().find(|(fk, _)| *fk == k) {
                    Some((_, vals)) => vals.push(v),
                    None => q.filters.push((k, vec![v])),
                },
            }
        }
        if sort_dirs.len() > sort_keys.len()
            || (!sort_dirs.is_empty() && sort_dirs.len() != sort_keys.len())
        {
            return Err(ApiError::bad_request(
                "The number of sort_keys and sort_dirs must be same",
            ));
        }
        q.sort_counts = (sort_keys.len(), sort_dirs.len());
        q.sort = sort_keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k, sort_dirs.get(i).copied().unwrap_or(true)))
            .collect();
        Ok(q)
    }

    /// Checks the query against a collection's attribute map as Neutron's `get_sorts` and
    /// `get_filters` do, and normalises typed filter values (`admin_state_up=yes` is `true`):
    /// as many `sort_dir` as `sort_key`, sort keys that are sort keys of the collection,
    /// boolean and integer filters that convert. Unknown filter keys stay accepted and
    /// ignored: that is Neutron without the `filter-validation` extension, which neutrino
    /// does not announce.
    pub fn check(&mut self, spec: &Spec) -> ApiResult<()> {
        if self.sort_counts.0 != self.sort_counts.1 {
            return Err(ApiError::bad_request(
                "The number of sort_keys and sort_dirs must be same",
            ));
        }
        let valid = |k: &str| {
            spec.sort_keys.contains(&k)
                || (k == "project_id" && spec.sort_keys.contains(&"tenant_id"))
                || (k == "tenant_id" && spec.sort_keys.contains(&"project_id"))
        };
        let absent: Vec<&str> = self
            .sort
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !valid(k))
            .collect();
        if !absent.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{} is invalid attribute for sort_keys",
                py_list(&absent)
            )));
        }
        for (k, vals) in &mut self.filters {
            if spec.bools.contains(&k.as_str()) {
                for v in vals.iter_mut() {
                    let b = parse_bool(v).ok_or_else(|| {
                        ApiError::invalid_input(format!("'{v}' cannot be converted to boolean"))
                    })?;
                    *v = b.to_string();
                }
            } else if spec.ints.contains(&k.as_str()) {
                for v in vals.iter_mut() {
                    let n = parse_int(v).ok_or_else(|| {
                        ApiError::invalid_input(format!("'{v}' is not an integer"))
                    })?;
                    *v = n.to_string();
                }
            }
        }
        Ok(())
    }

    /// The sort Neutron applies: the requested keys, then `id` ascending unless `id` is one of
    /// them (`PaginationNativeHelper.update_args`), so pages and ties are stable.
    pub fn effective_sort(&self) -> Vec<(String, bool)> {
        let mut sort = self.sort.clone();
        if !sort.iter().any(|(k, _)| k == "id") {
            sort.push(("id".into(), true));
        }
        sort
    }

    /// Whether any tag filter is given.
    fn has_tag_filters(&self) -> bool {
        !(self.tags.is_empty()
            && self.tags_any.is_empty()
            && self.not_tags.is_empty()
            && self.not_tags_any.is_empty())
    }

    /// Removes and returns the values of a filter the caller handles itself.
    pub fn take_filter(&mut self, key: &str) -> Option<Vec<String>> {
        let i = self.filters.iter().position(|(k, _)| k == key)?;
        Some(self.filters.remove(i).1)
    }

    /// The values of a filter, if present.
    pub fn filter(&self, key: &str) -> Option<&[String]> {
        self.filters
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// Does `item` pass all attribute and tag filters?
    pub fn matches(&self, item: &Obj) -> bool {
        self.filters
            .iter()
            .all(|(k, vals)| match item.get(k.as_str()) {
                // Filters on attributes the resource does not have are ignored, as Neutron
                // does without the filter-validation extension.
                None => true,
                Some(v) => vals.iter().any(|want| value_matches(v, want)),
            })
            && self.tags_match(item)
    }

    fn tags_match(&self, item: &Obj) -> bool {
        if !self.has_tag_filters() {
            return true;
        }
        let have: Vec<&str> = item
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let has = |t: &String| have.contains(&t.as_str());
        (self.tags.is_empty() || self.tags.iter().all(has))
            && (self.tags_any.is_empty() || self.tags_any.iter().any(has))
            && (self.not_tags.is_empty() || !self.not_tags.iter().all(has))
            && (self.not_tags_any.is_empty() || !self.not_tags_any.iter().any(has))
    }

    /// Filters, sorts, pages and trims `items`, returning the response body
    /// `{"<collection>": [...], "<collection>_links": [...]}`. `self_url` is the
    /// collection's absolute URL without query.
    pub fn respond(&self, mut items: Vec<Obj>, collection: &str, self_url: &str) -> Value {
        // The marker is looked up before filtering: as in Neutron (and in [`Pager`]), the page
        // starts after the marker's place in the order even when the marker itself does not
        // pass the filters. A marker the caller cannot see is no marker.
        let marker = self.limit.and(self.marker.as_ref()).and_then(|m| {
            items
                .iter()
                .find(|i| i.get("id").and_then(Value::as_str) == Some(m.as_str()))
                .cloned()
        });
        items.retain(|i| self.matches(i));
        let sort = self.effective_sort();
        items.sort_by(|a, b| cmp_docs(&sort, a, b));
        let Some(limit) = self.limit else {
            // Without a limit Neutron ignores `marker` and `page_reverse`.
            return self.body(items, collection, self_url);
        };
        let (start, end) = match (&marker, self.page_reverse) {
            (Some(m), true) => {
                let end = items.partition_point(|i| cmp_docs(&sort, i, m) == Ordering::Less);
                (end.saturating_sub(limit), end)
            }
            (Some(m), false) => {
                let start = items.partition_point(|i| cmp_docs(&sort, i, m) != Ordering::Greater);
                (start, start.saturating_add(limit).min(items.len()))
            }
            (None, true) => (items.len().saturating_sub(limit), items.len()),
            (None, false) => (0, limit.min(items.len())),
        };
        let page: Vec<Obj> = items.drain(start..end).collect();
        self.body(page, collection, self_url)
    }

    /// The response body for a page already cut: links when paging, `fields` applied.
    fn body(&self, page: Vec<Obj>, collection: &str, self_url: &str) -> Value {
        fn id_of(o: Option<&Obj>) -> Option<&str> {
            o.and_then(|i| i.get("id")).and_then(Value::as_str)
        }
        let links = self.links(
            id_of(page.first()),
            id_of(page.last()),
            page.len(),
            self_url,
        );
        let items: Vec<Value> = page
            .into_iter()
            .map(|i| Value::Object(self.trim(i)))
            .collect();
        let mut body = Map::new();
        body.insert(collection.to_string(), Value::Array(items));
        if !links.is_empty() {
            body.insert(format!("{collection}_links"), Value::Array(links));
        }
        Value::Object(body)
    }

    /// Neutron's pagination links (api_common.py) for a page of `len` items from `first` to
    /// `last`: "next" unless a short forward page, "previous" unless a short reversed page.
    fn links(
        &self,
        first: Option<&str>,
        last: Option<&str>,
        len: usize,
        self_url: &str,
    ) -> Vec<Value> {
        let mut links = Vec::new();
        if let Some(limit) = self.limit {
            let short = len < limit;
            if !short || self.page_reverse {
                let href = self.link(self_url, last, false);
                links.push(serde_json::json!({"rel": "next", "href": href}));
            }
            if !short || !self.page_reverse {
                let href = self.link(self_url, first, true);
                links.push(serde_json::json!({"rel": "previous", "href": href}));
            }
        }
        links
    }

    fn link(&self, self_url: &str, marker: Option<&str>, reverse: bool) -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.raw {
            if k != "marker" && k != "page_reverse" {
                ser.append_pair(k, v);
            }
        }
        if let Some(marker) = marker {
            ser.append_pair("marker", marker);
        }
        if reverse {
            ser.append_pair("page_reverse", "True");
        }
        format!("{self_url}?{}", ser.finish())
    }

    /// Applies `fields=` to one document.
    pub fn trim(&self, item: Obj) -> Obj {
        trim_fields(item, &self.fields)
    }
}

/// Where a listing's rows come from and how much of the query SQL can answer: the table
/// (rows aliased `t`), the caller's visibility (`scope`), conditions that narrow the rows
/// (`cond`), and the columns that serve sort keys. Every condition must keep a superset of
/// what [`ListQuery::matches`] keeps on the rendered documents: SQL narrows, the in-memory
/// match decides.
pub struct Source {
    table: &'static str,
    backend: Backend,
    scope: Vec<String>,
    conds: Vec<String>,
    binds: Vec<String>,
    /// API attribute → mirrored column.
    columns: Vec<(&'static str, &'static str)>,
    /// Attributes whose rendered value is not the stored one: sorting on them is done in
    /// memory.
    computed: Vec<&'static str>,
}

/// Rows per batch when a page needs more than the first (the caller's policy or the
/// in-memory filters dropped some).
const MAX_BATCH: usize = 1000;

impl Source {
    /// Rows of `kind`; `id`, `project_id` (and `tenant_id`) and the kind's mirrored columns
    /// serve sorting and filtering.
    pub fn new(db: &Db, kind: &Kind) -> Source {
        let mut columns = vec![
            ("id", "id"),
            ("project_id", "project_id"),
            ("tenant_id", "project_id"),
        ];
        columns.extend(kind.columns.iter().map(|c| (*c, *c)));
        Source {
            table: kind.table,
            backend: db.backend(),
            scope: Vec::new(),
            conds: Vec::new(),
            binds: Vec::new(),
            columns,
            computed: Vec::new(),
        }
    }

    /// The table rows come from (aliased `t`).
    pub fn table(&self) -> &'static str {
        self.table
    }

    /// The engine, for callers writing backend-specific conditions.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A bound parameter holding `v`, to use in [`Source::scope`] or [`Source::cond`]
    /// (a token numbered `$N` when the statement is built).
    pub fn param(&mut self, v: &str) -> String {
        self.binds.push(v.to_string());
        format!("?{{{}}}", self.binds.len() - 1)
    }

    /// Restricts rows to those the caller may see (SQL on alias `t`). Also applies to the
    /// marker, so a marker the caller cannot see is no marker.
    pub fn scope(&mut self, sql: impl Into<String>) {
        self.scope.push(sql.into());
    }

    /// Narrows rows (SQL on alias `t`); must keep a superset of what the filters keep.
    pub fn cond(&mut self, sql: impl Into<String>) {
        self.conds.push(sql.into());
    }

    /// Declares attributes rendered differently from their stored value: sort keys among
    /// them make the listing sort in memory.
    pub fn computed(&mut self, keys: &[&'static str]) {
        self.computed.extend_from_slice(keys);
    }

    /// `t.<column> IN (values)`, also keeping NULLs when a value means "null" to
    /// [`value_matches`].
    pub fn column_in(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let params: Vec<String> = values.iter().map(|v| self.param(v)).collect();
        let mut sql = format!("t.{column} IN ({})", params.join(", "));
        if values.iter().any(|v| matches_null(v)) {
            sql = format!("({sql} OR t.{column} IS NULL)");
        }
        self.cond(sql);
    }

    /// Pushes the query's filters on `keys` into SQL: those on mirrored columns as indexed
    /// comparisons, the others as comparisons of the stored JSON text. Only for keys whose
    /// rendered value is the stored string (or null) and that policy never hides from this
    /// caller: a filter on a hidden attribute is ignored by [`ListQuery::matches`].
    pub fn push_filters(&mut self, query: &ListQuery, keys: &[&str]) {
        for (k, vals) in &query.filters {
            if !keys.contains(&k.as_str()) {
                continue;
            }
            if let Some(col) = self.column(k) {
                self.column_in(col, vals);
            } else if let Some(x) = self.json_text(k) {
                let params: Vec<String> = vals.iter().map(|v| self.param(v)).collect();
                self.cond(format!("({x} IN ({}) OR {x} IS NULL)", params.join(", ")));
            }
        }
    }

    /// Pushes the positive tag filters (`tags`, `tags-any`) into SQL; the negative ones stay
    /// in memory. Safe whatever policy hides: a row without the tags fails them either way.
    pub fn push_tags(&mut self, query: &ListQuery) {
        let has = |s: &mut Source, tag: &str| {
            let p = s.param(tag);
            match s.backend {
                Backend::Sqlite => format!(
                    "EXISTS (SELECT 1 FROM json_each(t.body, '$.tags') WHERE json_each.value = {p})"
                ),
                Backend::Postgres => {
                    format!("COALESCE(jsonb_exists(t.body::jsonb -> 'tags', {p}), false)")
                }
            }
        };
        for tag in &query.tags {
            let c = has(self, tag);
            self.cond(c);
        }
        if !query.tags_any.is_empty() {
            let any: Vec<String> = query.tags_any.iter().map(|t| has(self, t)).collect();
            self.cond(format!("({})", any.join(" OR ")));
        }
    }

    fn column(&self, key: &str) -> Option<&'static str> {
        self.columns
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, c)| *c)
    }

    /// The stored JSON value of `key` as SQL text (strings unquoted), on alias `t`.
    fn json_text(&self, key: &str) -> Option<String> {
        safe_key(key).then(|| match self.backend {
            Backend::Sqlite => format!("json_extract(t.body, '$.\"{key}\"')"),
            Backend::Postgres => format!("(t.body::jsonb ->> '{key}')"),
        })
    }

    /// The SQL terms that order rows by `key` as [`cmp_values`] orders documents (null or
    /// absent first), on alias `{a}`; None when SQL cannot order by it.
    fn sort_terms(&self, key: &str) -> Option<Vec<String>> {
        if key == "id" {
            return Some(vec!["{a}.id".into()]);
        }
        if self.computed.contains(&key) {
            return None;
        }
        if let Some(col) = self.column(key) {
            return Some(vec![
                format!("({{a}}.{col} IS NOT NULL)"),
                format!("COALESCE({{a}}.{col}, '')"),
            ]);
        }
        if !safe_key(key) {
            return None;
        }
        Some(match self.backend {
            Backend::Sqlite => {
                let x = format!("json_extract({{a}}.body, '$.\"{key}\"')");
                vec![format!("({x} IS NOT NULL)"), format!("COALESCE({x}, '')")]
            }
            Backend::Postgres => {
                let x = format!("({{a}}.body::jsonb -> '{key}')");
                vec![
                    format!("COALESCE(jsonb_typeof({x}) <> 'null', false)"),
                    format!("COALESCE({x}, 'null'::jsonb)"),
                ]
            }
        })
    }

    fn where_sql(&self, filtered: bool, extra: Option<&str>) -> String {
        let conds = if filtered { &self.conds[..] } else { &[] };
        let all: Vec<&str> = self
            .scope
            .iter()
            .chain(conds)
            .map(String::as_str)
            .chain(extra)
            .collect();
        if all.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", all.join(" AND "))
        }
    }
}

/// Attribute names that may appear in SQL text (they come from the code's own lists).
fn safe_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-')
}

fn matches_null(want: &str) -> bool {
    want.is_empty() || want == "None" || want == "null"
}

/// Serves a [`ListQuery`] from a [`Source`] in batches: the caller renders (and
/// policy-checks) each batch of stored documents and hands back what the caller may see with
/// [`Pager::push`]; the pager keeps what matches until the page is full.
///
/// ```ignore
/// let mut pager = query.pager(&db, src).await?;
/// while let Some(batch) = pager.next_batch(&db).await? {
///     for doc in batch { if let Some(out) = render(doc) { pager.push(out) } }
/// }
/// let body = pager.finish("ports", &url);
/// ```
pub struct Pager<'q> {
    query: &'q ListQuery,
    src: Source,
    /// SQL ordering terms with their direction (after `page_reverse`); None: in memory.
    terms: Option<Vec<(String, bool)>>,
    /// Rows come after this id's row in the SQL order (the marker, then each batch's last).
    after: Option<String>,
    page: Vec<Obj>,
    /// The page as JSON text (see [`Pager::push_raw`]).
    raw: Vec<(String, String)>,
    exhausted: bool,
    batches: usize,
}

impl ListQuery {
    /// Starts serving this query from `src`. A marker outside the caller's scope (or gone) is
    /// ignored, as when it is not in the list.
    pub async fn pager(&self, db: &Db, src: Source) -> ApiResult<Pager<'_>> {
        let sort = self.effective_sort();
        let reverse = self.limit.is_some() && self.page_reverse;
        let mut terms = Some(Vec::new());
        for (key, asc) in &sort {
            match (src.sort_terms(key), terms.as_mut()) {
                (Some(ts), Some(out)) => out.extend(ts.into_iter().map(|t| (t, *asc != reverse))),
                _ => terms = None,
            }
        }
        let mut after = None;
        if let (Some(_), Some(marker), Some(_)) = (self.limit, &self.marker, &terms) {
            let mut binds = src.binds.clone();
            binds.push(marker.clone());
            let mut sql = format!(
                "SELECT 1 FROM {} t WHERE t.id = ?{{{}}}",
                src.table,
                binds.len() - 1
            );
            for c in &src.scope {
                sql.push_str(" AND ");
                sql.push_str(c);
            }
            let (sql, args) = number_params(&sql, &binds);
            let mut q = sqlx::query(&sql);
            for b in &args {
                q = q.bind(b.as_str());
            }
            if q.fetch_optional(db.reader()).await?.is_some() {
                after = Some(marker.clone());
            }
        }
        Ok(Pager {
            query: self,
            src,
            terms,
            after,
            page: Vec::new(),
            raw: Vec::new(),
            exhausted: false,
            batches: 0,
        })
    }
}

/// Replaces the `?{i}` tokens of [`Source::param`] by `$1, $2, ...` in order of appearance
/// and returns the values to bind in that order (a value used twice is bound twice).
fn number_params(sql: &str, binds: &[String]) -> (String, Vec<String>) {
    let mut out = String::with_capacity(sql.len());
    let mut args = Vec::new();
    let mut rest = sql;
    while let Some(i) = rest.find("?{") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        match tail
            .find('}')
            .and_then(|j| Some((j, tail[..j].parse::<usize>().ok()?)))
        {
            Some((j, n)) if n < binds.len() => {
                args.push(binds[n].clone());
                out.push_str(&format!("${}", args.len()));
                rest = &tail[j + 1..];
            }
            _ => {
                out.push_str("?{");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    (out, args)
}

impl Pager<'_> {
    fn full(&self) -> bool {
        self.terms.is_some()
            && self
                .query
                .limit
                .is_some_and(|l| self.page.len() + self.raw.len() >= l)
    }

    /// The next stored documents to render, in order; None when the page is full or the
    /// rows are exhausted.
    pub async fn next_batch(&mut self, db: &Db) -> ApiResult<Option<Vec<Obj>>> {
        let Some(rows) = self.next_raw(db).await? else {
            return Ok(None);
        };
        let docs = rows
            .iter()
            .map(|(_, body)| crate::db::parse_body(body))
            .collect::<ApiResult<Vec<Obj>>>()?;
        Ok(Some(docs))
    }

    /// Whether SQL sorts and pages (else every visible row is read and sorted in memory).
    pub fn in_sql(&self) -> bool {
        self.terms.is_some()
    }

    /// Like [`Pager::next_batch`], as stored: `(id, body text)`.
    pub async fn next_raw(&mut self, db: &Db) -> ApiResult<Option<Vec<(String, String)>>> {
        if self.exhausted || self.full() {
            return Ok(None);
        }
        let mut binds = self.src.binds.clone();
        let mut keyset = None;
        let first = self.batches == 0;
        self.batches += 1;
        let (order, limit) = match &self.terms {
            None => ("t.id".to_string(), None),
            Some(terms) => {
                if let Some(after) = &self.after {
                    binds.push(after.clone());
                    keyset = Some(keyset_sql(self.src.table, terms, binds.len() - 1));
                }
                let order: Vec<String> = terms
                    .iter()
                    .map(|(t, asc)| {
                        format!(
                            "{} {}",
                            t.replace("{a}", "t"),
                            if *asc { "ASC" } else { "DESC" }
                        )
                    })
                    .collect();
                let limit = self.query.limit.map(|l| {
                    let need = l - self.page.len();
                    // The first batch is the page itself (the common case: every row passes);
                    // later ones grow, since rows are being dropped.
                    if first {
                        need
                    } else {
                        (need * 4).clamp(64, MAX_BATCH)
                    }
                });
                (order.join(", "), limit)
            }
        };
        // Sorting in memory needs every visible row, the marker's too even when it does not
        // pass the filters ([`ListQuery::respond`] filters).
        let filtered = self.terms.is_some();
        let mut sql = format!(
            "SELECT t.id, t.body FROM {} t{} ORDER BY {order}",
            self.src.table,
            self.src.where_sql(filtered, keyset.as_deref())
        );
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let (sql, args) = number_params(&sql, &binds);
        let mut q = sqlx::query(&sql);
        for b in &args {
            q = q.bind(b.as_str());
        }
        let rows = q.fetch_all(db.reader()).await?;
        if limit.is_none_or(|n| rows.len() < n) {
            self.exhausted = true;
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?));
        }
        if let Some((id, _)) = out.last() {
            self.after = Some(id.clone());
        }
        Ok(Some(out))
    }

    /// Offers one document as JSON text, sent as it is: for callers whose every filter SQL
    /// answered exactly, with no `fields`, on a pager [`Pager::in_sql`] (nothing is matched
    /// or trimmed here). Saves parsing and re-serialising what is stored in wire form.
    pub fn push_raw(&mut self, id: String, json: String) {
        if !self.full() {
            self.raw.push((id, json));
        }
    }

    /// The response body as JSON text, for pages filled with [`Pager::push_raw`].
    pub fn finish_raw(mut self, collection: &str, self_url: &str) -> String {
        if self.query.limit.is_some() && self.query.page_reverse {
            self.raw.reverse();
        }
        let first = self.raw.first().map(|(id, _)| id.as_str());
        let last = self.raw.last().map(|(id, _)| id.as_str());
        let links = self.query.links(first, last, self.raw.len(), self_url);
        let mut out =
            String::with_capacity(self.raw.iter().map(|(_, j)| j.len() + 1).sum::<usize>() + 64);
        out.push_str(&format!("{{\"{collection}\":["));
        for (i, (_, json)) in self.raw.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(json);
        }
        out.push(']');
        if !links.is_empty() {
            out.push_str(&format!(",\"{collection}_links\":{}", Value::Array(links)));
        }
        out.push('}');
        out
    }

    /// Offers one rendered document the caller may see; kept if it passes the filters and
    /// the page has room.
    pub fn push(&mut self, item: Obj) {
        if !self.full() && (self.terms.is_none() || self.query.matches(&item)) {
            self.page.push(item);
        }
    }

    /// The response body.
    pub fn finish(mut self, collection: &str, self_url: &str) -> Value {
        if self.terms.is_none() {
            return self.query.respond(self.page, collection, self_url);
        }
        if self.query.limit.is_some() && self.query.page_reverse {
            self.page.reverse();
        }
        self.query.body(self.page, collection, self_url)
    }
}

/// Rows strictly after the marker row `$n` in the order of `terms`:
/// `t1 > m1 OR (t1 = m1 AND t2 > m2) OR ...`, `<` for descending terms. The marker's values
/// are read by scalar subqueries, so they are never converted between SQL and JSON.
fn keyset_sql(table: &str, terms: &[(String, bool)], n: usize) -> String {
    if let [(t, asc)] = terms {
        // Sorting by id only: a plain range on the primary key.
        return format!(
            "{} {} ?{{{n}}}",
            t.replace("{a}", "t"),
            if *asc { ">" } else { "<" }
        );
    }
    let m = |t: &str| {
        format!(
            "(SELECT {} FROM {table} m WHERE m.id = ?{{{n}}})",
            t.replace("{a}", "m")
        )
    };
    let mut ors = Vec::new();
    for (i, (t, asc)) in terms.iter().enumerate() {
        let mut ands: Vec<String> = terms[..i]
            .iter()
            .map(|(p, _)| format!("{} = {}", p.replace("{a}", "t"), m(p)))
            .collect();
        ands.push(format!(
            "{} {} {}",
            t.replace("{a}", "t"),
            if *asc { ">" } else { "<" },
            m(t)
        ));
        ors.push(format!("({})", ands.join(" AND ")));
    }
    format!("({})", ors.join(" OR "))
}

/// Keeps only `fields` (all when empty).
pub fn trim_fields(item: Obj, fields: &[String]) -> Obj {
    if fields.is_empty() {
        return item;
    }
    item.into_iter()
        .filter(|(k, _)| fields.iter().any(|f| f == k))
        .collect()
}

/// Compares a stored value with a filter value given as text.
pub fn value_matches(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Bool(b) => parse_bool(want) == Some(*b),
        Value::Number(n) => n.to_string() == want,
        Value::Null => want.is_empty() || want == "None" || want == "null",
        Value::Array(a) => a.iter().any(|x| value_matches(x, want)),
        Value::Object(_) => false,
    }
}

fn rank(v: Option<&Value>) -> u8 {
    match v {
        None | Some(Value::Null) => 0,
        Some(Value::Bool(_)) => 1,
        Some(Value::Number(_)) => 2,
        Some(Value::String(_)) => 3,
        Some(Value::Array(_)) => 4,
        Some(Value::Object(_)) => 5,
    }
}

fn cmp_docs(sort: &[(String, bool)], a: &Obj, b: &Obj) -> Ordering {
    for (k, asc) in sort {
        let o = cmp_values(a.get(k.as_str()), b.get(k.as_str()));
        if o != Ordering::Equal {
            return if *asc { o } else { o.reverse() };
        }
    }
    Ordering::Equal
}

fn cmp_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Obj {
        v.as_object().unwrap().clone()
    }

    fn items() -> Vec<Obj> {
        (0..5)
            .map(|i| obj(json!({"id": format!("id{i}"), "name": format!("n{}", 4 - i), "shared": i % 2 == 0, "tags": if i < 2 {json!(["a","b"])} else {json!(["b"])}})))
            .collect()
    }

    #[test]
    fn filters_or_within_key_and_bools() {
        let q = ListQuery::parse(Some("name=n1&name=n2&shared=True")).unwrap();
        let body = q.respond(items(), "networks", "http://x/v2.0/networks");
        let names: Vec<_> = body["networks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("n2")]);
    }

    #[test]
    fn tags_semantics() {
        let q = ListQuery::parse(Some("tags=a,b")).unwrap();
        assert_eq!(
            q.respond(items(), "n", "u")["n"].as_array().unwrap().len(),
            2
        );
        let q = ListQuery::parse(Some("not-tags-any=a")).unwrap();
        assert_eq!(
            q.respond(items(), "n", "u")["n"].as_array().unwrap().len(),
            3
        );
        let q = ListQuery::parse(Some("tags-any=a,zzz")).unwrap();
        assert_eq!(
            q.respond(items(), "n", "u")["n"].as_array().unwrap().len(),
            2
        );
        let q = ListQuery::parse(Some("not-tags=a,b")).unwrap();
        assert_eq!(
            q.respond(items(), "n", "u")["n"].as_array().unwrap().len(),
            3
        );
    }

    #[test]
    fn pagination_links_and_fields() {
        let q = ListQuery::parse(Some("limit=2&fields=id&sort_key=name&sort_dir=asc")).unwrap();
        let body = q.respond(items(), "networks", "http://h/v2.0/networks");
        let page = body["networks"].as_array().unwrap();
        assert_eq!(page, &vec![json!({"id": "id4"}), json!({"id": "id3"})]);
        assert_eq!(body["networks_links"].as_array().unwrap().len(), 2);
        let next = body["networks_links"][0]["href"].as_str().unwrap();
        assert!(next.contains("marker=id3"), "{next}");
        let q2 = ListQuery::parse(Some(next.split_once('?').unwrap().1)).unwrap();
        let body2 = q2.respond(items(), "networks", "http://h/v2.0/networks");
        let ids: Vec<_> = body2["networks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].clone())
            .collect();
        assert_eq!(ids, vec![json!("id2"), json!("id1")]);
        let rels: Vec<_> = body2["networks_links"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["rel"].clone())
            .collect();
        assert_eq!(rels, vec![json!("next"), json!("previous")]);
    }

    const SPEC: Spec = Spec {
        sort_keys: &["id", "name", "tenant_id"],
        bools: &["admin_state_up"],
        ints: &["mtu"],
    };

    fn check(q: &str) -> Result<ListQuery, ApiError> {
        let mut q = ListQuery::parse(Some(q))?;
        q.check(&SPEC)?;
        Ok(q)
    }

    #[test]
    fn sort_keys_and_typed_filters_follow_the_attribute_map() {
        let e = check("sort_key=password&sort_dir=asc").unwrap_err();
        assert_eq!(e.message, "['password'] is invalid attribute for sort_keys");
        let e = check("sort_key=name").unwrap_err();
        assert_eq!(
            e.message,
            "The number of sort_keys and sort_dirs must be same"
        );
        assert_eq!(
            check("sort_key=project_id&sort_dir=desc").unwrap().sort,
            vec![("project_id".to_string(), false)]
        );
        // Empty values do not count, as Neutron's list_args drops them.
        assert!(check("sort_key=&sort_dir=").unwrap().sort.is_empty());
        let e = check("admin_state_up=maybe").unwrap_err();
        assert_eq!(e.kind, "InvalidInput");
        assert_eq!(
            e.message,
            "Invalid input for operation: 'maybe' cannot be converted to boolean."
        );
        let q = check("admin_state_up=Yes&admin_state_up=off&mtu=+1500").unwrap();
        assert_eq!(q.filter("admin_state_up").unwrap(), ["true", "false"]);
        assert_eq!(q.filter("mtu").unwrap(), ["1500"]);
        assert!(check("mtu=1.5").is_err());
    }

    #[test]
    fn neutron_sorts_nulls_first_and_breaks_ties_by_id_ascending() {
        let docs: Vec<Obj> = vec![
            obj(json!({"id": "c", "name": "x"})),
            obj(json!({"id": "a", "name": null})),
            obj(json!({"id": "b", "name": "x"})),
            obj(json!({"id": "d"})),
        ];
        let q = ListQuery::parse(Some("sort_key=name&sort_dir=desc")).unwrap();
        let body = q.respond(docs.clone(), "n", "u");
        let ids: Vec<_> = body["n"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].clone())
            .collect();
        assert_eq!(ids, vec![json!("b"), json!("c"), json!("a"), json!("d")]);
        // A marker without a limit is ignored, as in Neutron.
        let q = ListQuery::parse(Some("marker=b")).unwrap();
        assert_eq!(q.respond(docs, "n", "u")["n"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn params_are_numbered_in_order_of_use() {
        let binds = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let (sql, args) = number_params("x = ?{2} AND y IN (?{0}, ?{2}) AND z = '?{'", &binds);
        assert_eq!(sql, "x = $1 AND y IN ($2, $3) AND z = '?{'");
        assert_eq!(args, vec!["c", "a", "c"]);
    }

    #[test]
    fn keyset_compares_with_the_marker_row() {
        let terms = vec![("{a}.id".to_string(), false)];
        assert_eq!(keyset_sql("ports", &terms, 3), "t.id < ?{3}");
        let terms = vec![("{a}.name".to_string(), true), ("{a}.id".to_string(), true)];
        assert_eq!(
            keyset_sql("ports", &terms, 0),
            "((t.name > (SELECT m.name FROM ports m WHERE m.id = ?{0})) OR \
             (t.name = (SELECT m.name FROM ports m WHERE m.id = ?{0}) AND \
             t.id > (SELECT m.id FROM ports m WHERE m.id = ?{0})))"
        );
    }

    #[test]
    fn bad_sort_dir_is_400() {
        assert_eq!(
            ListQuery::parse(Some("sort_key=id&sort_dir=up"))
                .unwrap_err()
                .status,
            400
        );
    }
}
