//! The values of a request that the payload model scores: what an attacker controls in the
//! parameters of a request, in the form the payload families of `data/http` are written in.
//!
//! - the query string (after `?`, before `#`) as `application/x-www-form-urlencoded` pairs;
//! - the body: form-encoded pairs when its `Content-Type` says so, else the whole body as one value
//!   (an XML or JSON document: XXE and NoSQL payloads travel that way).
//!
//! Pairs are decoded by `form_urlencoded` (`+` is a space, `%XX` decoded once, bytes that are not
//! UTF-8 become U+FFFD), as the payload lists hold them decoded; the featuriser decodes once more,
//! so a doubly encoded payload still gives its n-grams. A pair with an empty value gives its name
//! (`?<script>…` carries the payload as a bare name). Empty values, the path and the headers are
//! not scored: the training families are parameter values, and a path or a header is not one.
//!
//! Bounded: at most [`MAX_VALUES`] values per request and [`MAX_VALUE_BYTES`] bytes per value;
//! what is cut is counted in [`RequestValues`].

use crate::HttpRequest;

/// Most values scored per request; the rest are counted, not scored.
pub const MAX_VALUES: usize = 64;

/// Longest value scored, in bytes (a longer one is cut at a character boundary and marked).
pub const MAX_VALUE_BYTES: usize = 8 * 1024;

/// Where a value sits in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    /// A query-string pair.
    Query,
    /// A form-encoded body pair.
    Form,
    /// The whole body (not form-encoded).
    Body,
}

impl Place {
    /// `query`, `form` or `body`.
    pub fn as_str(self) -> &'static str {
        match self {
            Place::Query => "query",
            Place::Form => "form",
            Place::Body => "body",
        }
    }
}

/// One scored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Where it sits.
    pub place: Place,
    /// The parameter's name (decoded; empty for a whole body, or a bare name standing for itself).
    pub name: String,
    /// The decoded value.
    pub text: String,
    /// The value was longer than [`MAX_VALUE_BYTES`] and was cut.
    pub truncated: bool,
}

impl Value {
    /// The value's field as alerts name it: `query:NAME`, `form:NAME` (a bare name: `query:`) or
    /// `body`.
    pub fn field(&self) -> String {
        match self.place {
            Place::Body => "body".to_string(),
            p => format!("{}:{}", p.as_str(), self.name),
        }
    }
}

/// `text` as a form-encoded query value (`form_urlencoded`'s encoding: a space as `+`, bytes other
/// than letters, digits and `*-._` as `%XX`), for building requests that [`values`] decodes back.
pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A request's values and what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestValues {
    /// Values in request order (query first, then body), at most [`MAX_VALUES`].
    pub values: Vec<Value>,
    /// Non-empty values past [`MAX_VALUES`], not scored.
    pub dropped: usize,
}

fn cut(mut text: String) -> (String, bool) {
    if text.len() <= MAX_VALUE_BYTES {
        return (text, false);
    }
    let mut end = MAX_VALUE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

impl RequestValues {
    fn push(&mut self, place: Place, name: String, text: String) {
        if text.is_empty() {
            return;
        }
        if self.values.len() >= MAX_VALUES {
            self.dropped += 1;
            return;
        }
        let (text, truncated) = cut(text);
        self.values.push(Value {
            place,
            name,
            text,
            truncated,
        });
    }

    fn pairs(&mut self, place: Place, bytes: &[u8]) {
        for (k, v) in form_urlencoded::parse(bytes) {
            if v.is_empty() {
                self.push(place, String::new(), k.into_owned());
            } else {
                self.push(place, k.into_owned(), v.into_owned());
            }
        }
    }
}

/// Whether a `Content-Type` value is `application/x-www-form-urlencoded` (parameters ignored).
fn is_form(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    essence.eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
}

/// The values of `r` that the payload model scores.
pub fn values(r: &HttpRequest) -> RequestValues {
    let mut out = RequestValues::default();
    let target = r.target.as_bytes();
    let target = target
        .iter()
        .position(|&b| b == b'#')
        .map_or(target, |end| &target[..end]);
    if let Some(q) = target.iter().position(|&b| b == b'?') {
        out.pairs(Place::Query, &target[q + 1..]);
    }
    if !r.body.is_empty() {
        if r.header("content-type").is_some_and(is_form) {
            out.pairs(Place::Form, &r.body);
        } else {
            out.push(
                Place::Body,
                String::new(),
                String::from_utf8_lossy(&r.body).into_owned(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, content_type: Option<&str>, body: &[u8]) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            target: target.into(),
            minor_version: Some(1),
            headers: content_type
                .map(|c| ("Content-Type".to_string(), c.as_bytes().to_vec()))
                .into_iter()
                .collect(),
            body: body.to_vec(),
            body_truncated: false,
        }
    }

    fn texts(v: &RequestValues) -> Vec<(Place, &str, &str)> {
        v.values
            .iter()
            .map(|v| (v.place, v.name.as_str(), v.text.as_str()))
            .collect()
    }

    #[test]
    fn query_and_form_pairs_are_decoded_once() {
        let r = request(
            "/tienda1/anadir.jsp?id=2&nombre=Jam%F3n+Ib%E9rico&q=%2527%20OR%201%3D1#frag=x",
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            b"login=admin&pwd=a%3Cb&=&empty=",
        );
        let v = values(&r);
        assert_eq!(
            texts(&v),
            [
                (Place::Query, "id", "2"),
                (Place::Query, "nombre", "Jam\u{fffd}n Ib\u{fffd}rico"),
                (Place::Query, "q", "%27 OR 1=1"),
                (Place::Form, "login", "admin"),
                (Place::Form, "pwd", "a<b"),
                (Place::Form, "", "empty"),
            ],
            "the fragment is not sent to a server; an empty pair is skipped"
        );
        assert_eq!(v.dropped, 0);
    }

    #[test]
    fn a_bare_name_stands_for_itself_and_other_bodies_are_one_value() {
        let xml = b"<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><a>&x;</a>";
        let r = request(
            "/api?<script>alert(1)</script>",
            Some("application/xml"),
            xml,
        );
        let v = values(&r);
        assert_eq!(
            texts(&v),
            [
                (Place::Query, "", "<script>alert(1)</script>"),
                (Place::Body, "", std::str::from_utf8(xml).expect("utf8")),
            ]
        );
        assert!(values(&request("/index.html", None, b"")).values.is_empty());
    }

    #[test]
    fn encoded_values_decode_back() {
        for text in ["' OR 1=1--", "a b&c=d+e%", "{{7*7}}", "Jamón"] {
            let r = request(
                &format!("/?q={}&f={}", encode(text), encode(text)),
                None,
                b"",
            );
            let v = values(&r);
            assert_eq!(
                texts(&v),
                [(Place::Query, "q", text), (Place::Query, "f", text)]
            );
            assert_eq!(v.values[0].field(), "query:q");
        }
        let body = values(&request("/", Some("text/xml"), b"<a/>"));
        assert_eq!(body.values[0].field(), "body");
    }

    #[test]
    fn values_are_bounded() {
        let many: Vec<String> = (0..MAX_VALUES + 5).map(|i| format!("p{i}=v")).collect();
        let long = "é".repeat(MAX_VALUE_BYTES);
        let target = format!("/?{}&last={long}", many.join("&"));
        let v = values(&request(&target, None, b""));
        assert_eq!(v.values.len(), MAX_VALUES);
        assert_eq!(v.dropped, 6, "five short values and the long one");
        let r = request("/", Some("text/plain"), long.as_bytes());
        let v = values(&r);
        assert!(v.values[0].truncated);
        assert_eq!(v.values[0].text.len(), MAX_VALUE_BYTES);
    }
}
