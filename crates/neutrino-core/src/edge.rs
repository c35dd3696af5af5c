//! HTTP edge rules shared by the two ports (network API and identity): reading a request body
//! whole within a limit, and which characters client text may hold.
//!
//! Both ports read the body before routing. An answer given without reading it (a 401 from
//! an extractor, a 404, a 405) leaves hyper to close the connection without saying so, and a
//! keep-alive client's next request on it fails; a body read whole leaves the connection
//! usable. Beyond the limit the connection cannot be reused, and callers answer with
//! `Connection: close`.
//!
//! Control characters. Neutron and Keystone check none (neutron-lib's `validate_string`
//! checks type and length) and MySQL stores them; but PostgreSQL refuses NUL in text (a 500
//! for any NUL reaching a bound parameter), and a name holding an escape sequence or a line
//! break corrupts every table and log that shows it. So, deliberately, on both engines:
//! - one-line strings (names, ids and every other typed string, URL paths, query keys)
//!   refuse every control character: C0, DEL and C1 ([`is_line`]);
//! - free text (descriptions, user data, strings nested in bodies, filter values) refuses
//!   NUL and the C0 controls other than tab, line feed and carriage return, which
//!   multi-line text legitimately holds ([`is_text`]).
//!
//! This module is pure apart from reading the body; it knows no resource and no error format.

use std::pin::Pin;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, Uri, header};

/// oslo.middleware's default `max_request_body_size` (Neutron's and Keystone's).
pub const DEFAULT_MAX_BODY: usize = 114_688;

/// Why a body was not read whole.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than the limit (declared or read).
    TooLarge,
    /// The client broke off or sent a malformed body.
    Broken(axum::Error),
}

/// Reads the whole body, refusing more than `limit` bytes; a declared `Content-Length` over
/// the limit is refused without reading anything.
pub async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(BodyError::TooLarge);
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(BodyError::Broken)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        len = len.saturating_add(data.len());
        if len > limit {
            return Err(BodyError::TooLarge);
        }
        if !data.is_empty() {
            chunks.push(data);
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
}

/// Whether `s` may be a one-line string: no control character at all.
pub fn is_line(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// Whether `s` may be free text: no NUL, no C0 control other than tab, LF and CR.
pub fn is_text(s: &str) -> bool {
    !s.chars()
        .any(|c| c < ' ' && !matches!(c, '\t' | '\n' | '\r'))
}

/// A part of a request URI that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriProblem {
    /// The decoded path is not UTF-8.
    PathNotUtf8,
    /// A control character in the decoded path.
    Path,
    /// A control character in a query key.
    QueryKey,
    /// A forbidden character in the value of this query key.
    QueryValue(String),
}

/// Checks the decoded path ([`is_line`]), query keys ([`is_line`]) and query values
/// ([`is_text`]) of `uri`.
pub fn check_uri(uri: &Uri) -> Result<(), UriProblem> {
    let path = percent_decode(uri.path().as_bytes(), false);
    let path = std::str::from_utf8(&path).map_err(|_| UriProblem::PathNotUtf8)?;
    if !is_line(path) {
        return Err(UriProblem::Path);
    }
    for pair in uri.query().unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = String::from_utf8_lossy(&percent_decode(k.as_bytes(), true)).into_owned();
        if !is_line(&k) {
            return Err(UriProblem::QueryKey);
        }
        if !is_text(&String::from_utf8_lossy(&percent_decode(
            v.as_bytes(),
            true,
        ))) {
            return Err(UriProblem::QueryValue(k));
        }
    }
    Ok(())
}

/// Decodes `%XX` escapes (and `+` as a space in a query); malformed escapes stay as they are,
/// as form decoders leave them.
pub fn percent_decode(s: &[u8], plus_is_space: bool) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"/a%00b", false), b"/a\0b");
        assert_eq!(percent_decode(b"a+b%2", true), b"a b%2");
        assert_eq!(percent_decode(b"a+b", false), b"a+b");
        assert_eq!(percent_decode(b"%4", false), b"%4");
        assert_eq!(percent_decode(b"%41", false), b"A");
        assert_eq!(percent_decode(b"%zz%41%", false), b"%zzA%");
    }

    #[test]
    fn character_classes() {
        assert!(is_line("réseau ✓ 网络"));
        assert!(!is_line("a\tb") && !is_line("a\u{7f}") && !is_line("a\u{85}"));
        assert!(is_text("line\r\nline\tx\u{7f}"));
        assert!(!is_text("a\0b") && !is_text("\u{1b}[2J"));
    }

    #[test]
    fn uri_checks() {
        let check = |s: &str| check_uri(&s.parse().unwrap());
        check("/v2.0/networks?name=a%20b&description=line%0Aline&x").unwrap();
        assert_eq!(check("/v2.0/routers/%00"), Err(UriProblem::Path));
        assert_eq!(check("/v2.0/routers/a%1Fb"), Err(UriProblem::Path));
        assert_eq!(check("/v2.0/routers/%FF"), Err(UriProblem::PathNotUtf8));
        assert_eq!(check("/v2.0/ports?%00=x"), Err(UriProblem::QueryKey));
        assert_eq!(
            check("/v2.0/ports?device_id=%00"),
            Err(UriProblem::QueryValue("device_id".into()))
        );
        assert_eq!(
            check("/v2.0/ports?name=%07"),
            Err(UriProblem::QueryValue("name".into()))
        );
    }
}
