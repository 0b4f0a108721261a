//! Request screening: the demo's small web application firewall.
//!
//! Every request is checked before it reaches a handler; an attack is answered at once and
//! counted in `demo_rejected_requests_total{reason}`: 400 for a malicious pattern in the
//! path, query, headers or body (`sql_injection`, `xss`, `path_traversal`,
//! `command_injection`), 413 for a body over [`MAX_BODY`] (`oversized_body`), 431 for headers
//! over [`MAX_HEADERS`] (`oversized_headers`). The rules are deliberately simple signatures,
//! like a WAF's core rule set, and [`screen`] is pure so they are tested without a server.

use axum::http::StatusCode;

/// Largest body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest total size of the header names and values accepted, in bytes.
pub const MAX_HEADERS: usize = 8 * 1024;

/// Why a request was refused; the label value of `demo_rejected_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    SqlInjection,
    Xss,
    PathTraversal,
    CommandInjection,
    OversizedBody,
    OversizedHeaders,
}

impl Rejection {
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::SqlInjection => "sql_injection",
            Rejection::Xss => "xss",
            Rejection::PathTraversal => "path_traversal",
            Rejection::CommandInjection => "command_injection",
            Rejection::OversizedBody => "oversized_body",
            Rejection::OversizedHeaders => "oversized_headers",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Rejection::OversizedBody => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::OversizedHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

const SQL_INJECTION: &[&str] = &[
    "' or ",
    "\" or ",
    "' or'",
    "'or'",
    "union select",
    "union all select",
    "; drop ",
    ";drop ",
    "' --",
    "'--",
    "sleep(",
    "benchmark(",
    "information_schema",
];
const XSS: &[&str] = &[
    "<script",
    "</script",
    "javascript:",
    "onerror=",
    "onload=",
    "<iframe",
    "<svg",
    "document.cookie",
];
const PATH_TRAVERSAL: &[&str] = &["../", "..\\", "/etc/passwd", "/etc/shadow", "c:\\windows"];
const COMMAND_INJECTION: &[&str] = &[
    "$(",
    "`",
    "; cat ",
    ";cat ",
    "| cat ",
    "|cat ",
    "&& cat ",
    "; ls",
    "| ls",
    "&& ls",
    "; rm ",
    "| sh",
    "|sh",
    "/bin/sh",
    "/bin/bash",
    "; id",
    "| id",
    "&& id",
    "nc -e",
    "; wget ",
    "; curl ",
];

/// Decodes `%XX` escapes and `+` (as in a query string); invalid escapes stay as they are.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first attack signature found in `text` (already decoded), if any.
fn signature(text: &str) -> Option<Rejection> {
    // Decode twice: a double-encoded payload (`%252e%252e%252f`) is a classic evasion.
    let text = percent_decode(&percent_decode(text)).to_lowercase();
    let found = |list: &[&str]| list.iter().any(|p| text.contains(p));
    if found(SQL_INJECTION) {
        Some(Rejection::SqlInjection)
    } else if found(XSS) {
        Some(Rejection::Xss)
    } else if found(COMMAND_INJECTION) {
        // Before traversal: `; cat /etc/passwd` is a command first.
        Some(Rejection::CommandInjection)
    } else if found(PATH_TRAVERSAL) {
        Some(Rejection::PathTraversal)
    } else {
        None
    }
}

/// What the screen sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// Path and query as received (still percent-encoded).
    pub target: &'a str,
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The declared `content-length`, when present.
    pub content_length: Option<usize>,
    /// The body, when it was read (it is not read when the declared length is too large).
    pub body: &'a [u8],
}

/// Whether a request is refused, and why. Pure: the same request always gets the same answer.
pub fn screen(seen: &Seen<'_>) -> Option<Rejection> {
    let header_bytes: usize = seen
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    if header_bytes > MAX_HEADERS {
        return Some(Rejection::OversizedHeaders);
    }
    if seen.content_length.unwrap_or(0) > MAX_BODY || seen.body.len() > MAX_BODY {
        return Some(Rejection::OversizedBody);
    }
    if let Some(found) = signature(seen.target) {
        return Some(found);
    }
    // Headers a client chooses freely; Host, Content-Type and the like are left alone.
    for (name, value) in seen.headers {
        if matches!(
            *name,
            "user-agent" | "referer" | "cookie" | "x-forwarded-for" | "x-api-version"
        ) || name.starts_with("x-attack")
        {
            if let Some(found) = signature(&String::from_utf8_lossy(value)) {
                return Some(found);
            }
        }
    }
    signature(&String::from_utf8_lossy(seen.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(t: &str) -> Option<Rejection> {
        screen(&Seen {
            target: t,
            headers: &[],
            content_length: None,
            body: b"",
        })
    }

    #[test]
    fn ordinary_requests_pass() {
        for t in [
            "/",
            "/health",
            "/metrics",
            "/?page=2&sort=name",
            "/admin/flags/upstream_calls",
        ] {
            assert_eq!(target(t), None, "{t}");
        }
        let json = br#"{"mode":"latency","latency_ms":500}"#;
        let seen = Seen {
            target: "/fault",
            headers: &[
                ("content-type", b"application/json"),
                ("user-agent", b"curl/8.5"),
            ],
            content_length: Some(json.len()),
            body: json,
        };
        assert_eq!(screen(&seen), None);
    }

    #[test]
    fn each_attack_class_is_refused_with_its_reason() {
        let cases = [
            ("/?id=1%27%20OR%20%271%27%3D%271", Rejection::SqlInjection),
            (
                "/?q=1+UNION+SELECT+password+FROM+users",
                Rejection::SqlInjection,
            ),
            ("/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", Rejection::Xss),
            ("/?u=javascript:alert(1)", Rejection::Xss),
            (
                "/?file=..%2F..%2F..%2Fetc%2Fpasswd",
                Rejection::PathTraversal,
            ),
            ("/?file=%252e%252e%252fetc", Rejection::PathTraversal),
            (
                "/?host=127.0.0.1%3B%20cat%20%2Fetc%2Fhostname",
                Rejection::CommandInjection,
            ),
            ("/?x=%24(id)", Rejection::CommandInjection),
            (
                "/?h=1%3B%20cat%20%2Fetc%2Fpasswd",
                Rejection::CommandInjection,
            ),
        ];
        for (t, expected) in cases {
            assert_eq!(target(t), Some(expected), "{t}");
            assert_eq!(expected.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn payloads_in_bodies_and_free_headers_are_seen() {
        let body = b"name=<script>document.cookie</script>";
        let seen = Seen {
            target: "/",
            headers: &[],
            content_length: Some(body.len()),
            body,
        };
        assert_eq!(screen(&seen), Some(Rejection::Xss));
        let seen = Seen {
            target: "/",
            headers: &[("user-agent", b"() { :; }; /bin/bash -c id")],
            content_length: None,
            body: b"",
        };
        assert_eq!(screen(&seen), Some(Rejection::CommandInjection));
    }

    #[test]
    fn oversized_requests_get_413_and_431() {
        let big = vec![b'a'; MAX_BODY + 1];
        let seen = Seen {
            target: "/",
            headers: &[],
            content_length: Some(big.len()),
            body: &big,
        };
        assert_eq!(screen(&seen), Some(Rejection::OversizedBody));
        assert_eq!(
            Rejection::OversizedBody.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let value = vec![b'a'; MAX_HEADERS];
        let seen = Seen {
            target: "/",
            headers: &[("x-padding", &value)],
            content_length: None,
            body: b"",
        };
        assert_eq!(screen(&seen), Some(Rejection::OversizedHeaders));
        assert_eq!(Rejection::OversizedHeaders.status().as_u16(), 431);
    }

    #[test]
    fn percent_decoding_leaves_bad_escapes_alone() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
