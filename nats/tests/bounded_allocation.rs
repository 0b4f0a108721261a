//! A message that declares a huge length (an array, map, string or binary header claiming
//! 4 GiB) must not make the decoder ask for that memory: it is refused having allocated
//! little more than the message itself. Every byte the decoder asks the allocator for is
//! counted, so a decoder that trusted the header would fail here even where the operating
//! system would have granted the memory lazily.
//!
//! One test in this binary, so no other test's allocations are counted with it.

use std::alloc::System;
use std::path::PathBuf;

use immune_nats::{decode, SCHEMA_VERSION};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes asked of the allocator while `f` ran (allocations plus growth by reallocation).
fn asked_for<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let region = Region::new(GLOBAL);
    let out = f();
    let change = region.change();
    (
        out,
        change.bytes_allocated + change.bytes_reallocated.max(0) as usize,
    )
}

/// 4 GiB - 1 as a 32-bit length.
const HUGE: [u8; 4] = [0xff; 4];

/// Headers of a 32-bit length: array, map, str, bin, ext.
const HEADERS: [(u8, &str); 5] = [
    (0xdd, "array 32"),
    (0xdf, "map 32"),
    (0xdb, "str 32"),
    (0xc6, "bin 32"),
    (0xc9, "ext 32"),
];

/// What one decode may ask for at most: the serde visitors preallocate at most 1 MiB per
/// collection whatever a header claims, and a message has only a few levels of them.
const BOUND: usize = 8 * 1024 * 1024;

#[test]
fn huge_declared_lengths_do_not_allocate_what_they_claim() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/v{SCHEMA_VERSION}"));
    let mut fixtures: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("fixture"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 14);

    let mut worst = (0usize, String::new());
    let mut cases = 0usize;
    let mut check = |bytes: &[u8], what: String| {
        let (result, asked) = asked_for(|| decode(bytes));
        assert!(
            asked < BOUND,
            "{what}: decoding {} bytes asked for {asked} bytes ({result:?})",
            bytes.len()
        );
        if asked > worst.0 {
            worst = (asked, what);
        }
        cases += 1;
    };

    // A message that is nothing but the header.
    for (marker, name) in HEADERS {
        let mut bytes = vec![marker];
        bytes.extend_from_slice(&HUGE);
        check(&bytes, format!("a bare {name} header"));
    }
    // The header in place of every value and key of every fixture: the envelope, the event
    // id string, the body, the features map, the dead letter's binary payload, ...
    for (f, fixture) in fixtures.iter().enumerate() {
        for at in 0..fixture.len() {
            for (marker, name) in HEADERS {
                let mut bytes = fixture.clone();
                let end = (at + 5).min(bytes.len());
                bytes.splice(at..end, [marker, 0xff, 0xff, 0xff, 0xff]);
                check(&bytes, format!("fixture {f}, {name} at byte {at}"));
                // The same header with the rest of the message after it (inserted).
                let mut inserted = fixture.clone();
                inserted.splice(at..at, [marker, 0xff, 0xff, 0xff, 0xff]);
                check(
                    &inserted,
                    format!("fixture {f}, {name} inserted at byte {at}"),
                );
            }
        }
    }
    assert!(cases > 10_000, "only {cases} cases");
    println!(
        "{cases} messages with a 4 GiB length header: at most {} bytes allocated per decode ({})",
        worst.0, worst.1
    );
}
