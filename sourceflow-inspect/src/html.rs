//! HTML by hand: one escape function that every stored string goes through, the page layout,
//! and the small pieces the pages share (links with their query strings, pretty JSON, times).
//!
//! Nothing here emits a stored value without [`escape`]; attribute values are quoted with `"`
//! and escaped the same way, so a payload can close neither a tag nor an attribute.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

/// `text` with the five characters that matter in HTML text and quoted attributes replaced by
/// entities.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query-string component: everything but unreserved characters percent-encoded.
pub fn query_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

/// A link target under the inspector's mount point: `base` + `path` + the query pairs,
/// percent-encoded, then HTML-escaped for an `href` attribute.
pub fn href(base: &str, path: &str, query: &[(&str, &str)]) -> String {
    // Mounted under a path, the overview is the mount point itself (`/ops/inspect`, which a
    // nested router answers, where `/ops/inspect/` is not found).
    let mut url = if path == "/" && !base.is_empty() {
        base.to_owned()
    } else {
        format!("{base}{path}")
    };
    for (i, (key, value)) in query.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(key);
        url.push('=');
        url.push_str(&query_component(value));
    }
    escape(&url)
}

/// A stored JSON payload, pretty-printed when it parses, as escaped text for a `<pre>`.
pub fn pretty_json(payload: &[u8]) -> String {
    let pretty = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok());
    match pretty {
        Some(text) => escape(&text),
        None => escape(&String::from_utf8_lossy(payload)),
    }
}

/// A timestamp as the pages show it: UTC, to the millisecond.
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// The navigation entries: path and label.
const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/log", "Global log"),
    ("/tail", "Live tail"),
    ("/trace", "Correlation trace"),
];

/// A whole page: the layout around `body` (already HTML), titled `title` (plain text).
pub fn page(base: &str, title: &str, body: &str) -> String {
    let mut nav = String::new();
    for (path, label) in NAV {
        let _ = write!(nav, r#"<a href="{}">{label}</a>"#, href(base, path, &[]));
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · sourceflow inspect</title>
<link rel="stylesheet" href="{css}">
</head>
<body>
<header><span class="brand">sourceflow inspect</span><nav>{nav}</nav></header>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"#,
        title = escape(title),
        css = href(base, "/assets/style.css", &[]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_stored_text_is_text() {
        assert_eq!(
            escape(r#""><img src=x onerror=alert(1)><script>'"#),
            "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;&#39;"
        );
        assert_eq!(escape("a & b"), "a &amp; b");
    }

    #[test]
    fn links_encode_their_query() {
        assert_eq!(
            href(
                "/x",
                "/stream",
                &[("type", "shop.Order"), ("id", "a&b \"c\"")]
            ),
            "/x/stream?type=shop.Order&amp;id=a%26b%20%22c%22"
        );
    }

    #[test]
    fn payloads_are_pretty_and_escaped() {
        let shown = pretty_json(br#"{"note":"<b>"}"#);
        assert!(
            shown.contains("&quot;note&quot;: &quot;&lt;b&gt;&quot;"),
            "{shown}"
        );
        assert_eq!(pretty_json(b"not json <"), "not json &lt;");
    }
}
