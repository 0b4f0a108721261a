//! Property tests of the strict exposition reader with many generated inputs: arbitrary text
//! and the real-world fixtures mutated (cuts, deletions, inserted format characters, lines
//! duplicated or moved) are read or refused with a typed error naming a line that exists,
//! never a panic; and generated valid expositions (escaped label values, comments, blank
//! lines, CRLF, timestamps, odd spacing, every value form) read back exactly the samples
//! that were written.
//!
//! Cases per property are set below (about 10,000 in all);
//! `PROPTEST_CASES=100000 cargo test -p immune-collector --release --test fuzz_exposition`
//! runs more.

use immune_collector::exposition::{self, ExpositionError};
use immune_testkit::synthetic;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // A failing case found once is tried first on every later run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fuzz_exposition.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    }
}

/// The real-world fixtures, and a synthetic one with timestamps and every metric type.
fn fixtures() -> &'static [String] {
    static FIXTURES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    FIXTURES.get_or_init(|| {
        vec![
            include_str!("fixtures/go_client.prom").to_string(),
            include_str!("fixtures/python_client.prom").to_string(),
            include_str!("fixtures/immune_demo.prom").to_string(),
            synthetic::exposition(450, 1234.5),
        ]
    })
}

/// (name, labels, value) of one sample, owned.
type Owned = (String, Vec<(String, String)>, f64);

/// Reads `text`, checking on the way what must hold of any outcome: the count returned is
/// the samples visited, every label can be walked, and an error names an existing line whose
/// start it quotes.
fn read_checked(text: &str) -> Result<Result<Vec<Owned>, ExpositionError>, TestCaseError> {
    let mut samples = Vec::new();
    let outcome = exposition::read(text, |s| {
        let labels = s
            .labels()
            .map(|(k, v)| (k.to_string(), v.into_owned()))
            .collect();
        samples.push((s.name.to_string(), labels, s.value));
    });
    match outcome {
        Ok(count) => {
            prop_assert_eq!(count, samples.len());
            Ok(Ok(samples))
        }
        Err(e) => {
            let lines = text.lines().count().max(1);
            prop_assert!(
                (1..=lines).contains(&e.line),
                "line {} of {lines}: {e}",
                e.line
            );
            let line = text.lines().nth(e.line - 1).unwrap_or("");
            prop_assert!(
                line.starts_with(&e.excerpt),
                "the excerpt {:?} is not the start of line {}: {line:?}",
                e.excerpt,
                e.line
            );
            let named = format!("line {}", e.line);
            prop_assert!(e.to_string().contains(&named), "{e} does not say {named}");
            prop_assert!(!e.kind.as_str().is_empty());
            Ok(Err(e))
        }
    }
}

/// Read or refused, either is fine: what [`read_checked`] checks is what matters.
fn read_or_refused(text: &str) -> Result<(), TestCaseError> {
    read_checked(text).map(|_| ())
}

/// Characters that matter to the format, and some that do not.
const FORMAT_CHARS: &[char] = &[
    '{', '}', '=', '"', '\\', ',', ' ', '\t', '\n', '\r', '#', '.', 'e', 'E', '+', '-', '0', '1',
    '9', 'a', 'z', '_', ':', 'N', 'I', 'n', 'f', 'é', '\u{0}',
];

fn format_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FORMAT_CHARS), 0..256)
        .prop_map(|c| c.into_iter().collect())
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn arbitrary_text_is_read_or_refused_with_its_line(text in any::<String>()) {
        read_or_refused(&text)?;
    }

    #[test]
    fn text_of_format_characters_is_read_or_refused_with_its_line(text in format_text()) {
        read_or_refused(&text)?;
    }
}

/// One change to an exposition; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Mutation {
    Cut(usize),
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    Replace { at: usize, with: char },
    DuplicateLine(usize),
    MoveLine { from: usize, to: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => any::<usize>().prop_map(Mutation::Cut),
        2 => (any::<usize>(), 1usize..20).prop_map(|(at, len)| Mutation::Delete { at, len }),
        2 => (any::<usize>(), format_text().prop_map(|t| t.chars().take(6).collect()))
            .prop_map(|(at, text)| Mutation::Insert { at, text }),
        3 => (any::<usize>(), prop::sample::select(FORMAT_CHARS))
            .prop_map(|(at, with)| Mutation::Replace { at, with }),
        1 => any::<usize>().prop_map(Mutation::DuplicateLine),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Mutation::MoveLine { from, to }),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    // A byte position modulo the length, moved back to the start of its character.
    let at = |i: usize| {
        let mut i = if text.is_empty() { 0 } else { i % text.len() };
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let end_of = |start: usize, len: usize| {
        let mut end = (start + len).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        end
    };
    match m {
        Mutation::Cut(i) => text[..at(*i)].to_string(),
        Mutation::Delete { at: i, len } => {
            let start = at(*i);
            [&text[..start], &text[end_of(start, *len)..]].concat()
        }
        Mutation::Insert { at: i, text: more } => {
            let start = at(*i);
            [&text[..start], more.as_str(), &text[start..]].concat()
        }
        Mutation::Replace { at: i, with } => {
            if text.is_empty() {
                return String::new();
            }
            let start = at(*i);
            let end = start + text[start..].chars().next().map_or(0, char::len_utf8);
            [&text[..start], with.to_string().as_str(), &text[end..]].concat()
        }
        Mutation::DuplicateLine(i) | Mutation::MoveLine { from: i, .. } => {
            let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
            if lines.is_empty() {
                return text.to_string();
            }
            let from = i % lines.len();
            let line = lines[from];
            match m {
                Mutation::MoveLine { to, .. } => {
                    lines.remove(from);
                    lines.insert(to % (lines.len() + 1), line);
                }
                _ => lines.insert(from, line),
            }
            lines.concat()
        }
    }
}

proptest! {
    #![proptest_config(config(4_000))]

    #[test]
    fn mutated_fixtures_are_read_or_refused_with_their_line(
        which in any::<usize>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let fixtures = fixtures();
        let mut text = fixtures[which % fixtures.len()].clone();
        for m in &mutations {
            text = apply(&text, m);
        }
        read_or_refused(&text)?;
    }
}

// ---- generated valid expositions ---------------------------------------------------------

#[derive(Debug, Clone)]
struct Line {
    sample: Owned,
    /// How the value is written: shortest decimal, or with an exponent.
    exponent: bool,
    timestamp: Option<i64>,
    /// Blanks before the name, around `=` and `,`, before the value and timestamp.
    blank: &'static str,
    trailing_comma: bool,
    /// Comment and blank lines written before this sample.
    before: Vec<String>,
}

fn metric_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_:][a-zA-Z0-9_:]{0,24}"
}

fn label_value() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => any::<char>(),
            1 => prop::sample::select(vec!['"', '\\', '\n', '{', '}', ',', '=', ' ', '#']),
        ],
        0..16,
    )
    .prop_map(|c| c.into_iter().collect())
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => any::<f64>().prop_filter("NaN is its own case", |v| !v.is_nan()),
        2 => (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
    ]
}

fn comment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("   ".to_string()),
        metric_name().prop_map(|n| format!("# HELP {n} What it counts, \"quoted\" {{ }}.")),
        metric_name().prop_map(|n| format!("# TYPE {n} counter")),
        label_value().prop_map(|t| format!("#{}", t.replace(['\n', '\r'], " "))),
    ]
}

fn line() -> impl Strategy<Value = Line> {
    (
        metric_name(),
        prop::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,12}", label_value()), 0..5),
        value(),
        any::<bool>(),
        prop::option::of(any::<i64>()),
        prop::sample::select(vec![" ", "\t", "  ", " \t"]),
        any::<bool>(),
        prop::collection::vec(comment(), 0..3),
    )
        .prop_map(
            |(name, labels, value, exponent, timestamp, blank, trailing_comma, before)| Line {
                sample: (name, labels, value),
                exponent,
                timestamp,
                blank,
                trailing_comma,
                before,
            },
        )
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn write_value(v: f64, exponent: bool) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if exponent {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

fn write(lines: &[Line], crlf: bool) -> String {
    let end = if crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    for l in lines {
        for c in &l.before {
            out.push_str(c);
            out.push_str(end);
        }
        let (name, labels, value) = &l.sample;
        let b = l.blank;
        out.push_str(if l.trailing_comma { b } else { "" });
        out.push_str(name);
        if !labels.is_empty() || l.trailing_comma {
            out.push('{');
            let pairs: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}{b}={b}\"{}\"", escape(v)))
                .collect();
            out.push_str(&pairs.join(&format!("{b},{b}")));
            if l.trailing_comma && !labels.is_empty() {
                out.push(',');
            }
            out.push('}');
        }
        out.push_str(b);
        out.push_str(&write_value(*value, l.exponent));
        if let Some(ts) = l.timestamp {
            out.push_str(b);
            out.push_str(&ts.to_string());
        }
        out.push_str(end);
    }
    out
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn generated_expositions_read_back_exactly_what_was_written(
        lines in prop::collection::vec(line(), 0..40),
        crlf in any::<bool>(),
    ) {
        let text = write(&lines, crlf);
        let read = match read_checked(&text)? {
            Ok(samples) => samples,
            Err(e) => return Err(TestCaseError::fail(format!("a valid exposition refused: {e}\n{text}"))),
        };
        prop_assert_eq!(read.len(), lines.len());
        for (got, line) in read.iter().zip(&lines) {
            let want = &line.sample;
            prop_assert_eq!(&got.0, &want.0);
            prop_assert_eq!(&got.1, &want.1);
            prop_assert!(same_value(got.2, want.2), "{} read as {}", want.2, got.2);
        }
    }

    /// The same exposition cut anywhere but at a line end is refused as truncated.
    #[test]
    fn generated_expositions_cut_inside_a_line_are_refused(
        lines in prop::collection::vec(line(), 1..10),
        cut in any::<usize>(),
    ) {
        let text = write(&lines, false);
        let mut cut = 1 + cut % (text.len() - 1).max(1);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let cut_text = &text[..cut];
        prop_assume!(!cut_text.is_empty() && !cut_text.ends_with('\n'));
        let e = match read_checked(cut_text)? {
            Ok(_) => return Err(TestCaseError::fail("a cut exposition was read")),
            Err(e) => e,
        };
        prop_assert_eq!(e.kind, exposition::ErrorKind::Truncated);
    }
}
