//! Neutron's list semantics, implemented once for every collection.
//!
//! Parses the query string of a `GET /v2.0/<collection>` (attribute filters with repeated keys
//! meaning OR, tag filters, `fields`, `sort_key`/`sort_dir`, `limit`/`marker`/`page_reverse`)
//! and applies it to documents the caller may already see. Policy filtering happens before this
//! module; it must never widen what a caller sees.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::db::Obj;
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
                "sort_key" => sort_keys.push(v),
                "sort_dir" => match v.as_str() {
                    "asc" => sort_dirs.push(true),
                    "desc" => sort_dirs.push(false),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "Sort direction '{v}' is not supported"
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
        q.sort = sort_keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k, sort_dirs.get(i).copied().unwrap_or(true)))
            .collect();
        Ok(q)
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
        if self.tags.is_empty()
            && self.tags_any.is_empty()
            && self.not_tags.is_empty()
            && self.not_tags_any.is_empty()
        {
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
        items.retain(|i| self.matches(i));
        let mut sort = self.sort.clone();
        if sort.is_empty() && (self.limit.is_some() || self.marker.is_some()) {
            sort.push(("id".into(), true));
        }
        if !sort.is_empty() {
            if !sort.iter().any(|(k, _)| k == "id") {
                // Ties broken by id, so pages are stable.
                let dir = sort.last().map(|(_, d)| *d).unwrap_or(true);
                sort.push(("id".into(), dir));
            }
            items.sort_by(|a, b| {
                for (k, asc) in &sort {
                    let o = cmp_values(a.get(k.as_str()), b.get(k.as_str()));
                    if o != Ordering::Equal {
                        return if *asc { o } else { o.reverse() };
                    }
                }
                Ordering::Equal
            });
        }
        let mut links = Vec::new();
        if self.limit.is_some() || self.marker.is_some() {
            let pos = self.marker.as_ref().and_then(|m| {
                items
                    .iter()
                    .position(|i| i.get("id").and_then(Value::as_str) == Some(m.as_str()))
            });
            let limit = self.limit.unwrap_or(usize::MAX);
            let (start, end) = if self.page_reverse {
                let end = pos.unwrap_or(items.len());
                (end.saturating_sub(limit), end)
            } else {
                let start = pos.map(|p| p + 1).unwrap_or(0).min(items.len());
                (start, start.saturating_add(limit).min(items.len()))
            };
            let page: Vec<Obj> = items.drain(start..end).collect();
            if let Some(limit) = self.limit {
                // Neutron's rule (api_common.py): "next" unless a short forward page,
                // "previous" unless a short reversed page.
                let short = page.len() < limit;
                let id_of = |o: Option<&Obj>| {
                    o.and_then(|i| i.get("id"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                if !short || self.page_reverse {
                    let href = self.link(self_url, id_of(page.last()).as_deref(), false);
                    links.push(serde_json::json!({"rel": "next", "href": href}));
                }
                if !short || !self.page_reverse {
                    let href = self.link(self_url, id_of(page.first()).as_deref(), true);
                    links.push(serde_json::json!({"rel": "previous", "href": href}));
                }
            }
            items = page;
        }
        let items: Vec<Value> = items
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
        Value::Bool(b) => match want.to_ascii_lowercase().as_str() {
            "true" | "1" => *b,
            "false" | "0" => !*b,
            _ => false,
        },
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
