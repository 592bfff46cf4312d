//! The core does no I/O, reads no clock, starts no thread and draws no global randomness.
//! Clippy's `disallowed-methods` (see `clippy.toml`) catches calls; this test catches any
//! mention at all under `src/`, including imports and types.

// Tests and benchmarks may read files and clocks; the purity rules are for `src/` only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "async ",
    "std::fs",
    "std::net",
    "std::thread",
    "std::process",
    "Instant",
    "SystemTime",
    "thread_rng",
    "rand::",
    "HashMap",
    "HashSet",
];

fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn the_core_does_no_io_and_reads_no_clock() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 5, "found only {} source files", files.len());
    let mut offences = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source is readable");
        for (number, line) in text.lines().enumerate() {
            for word in FORBIDDEN {
                if line.contains(word) {
                    offences.push(format!("{}:{}: {word}: {line}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(offences.is_empty(), "the core must stay pure:\n{}", offences.join("\n"));
}

#[test]
fn the_core_depends_on_no_runtime() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("Cargo.toml is readable");
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or_default();
    for crate_name in ["tokio", "async-std", "rand", "mio", "smol"] {
        assert!(
            !dependencies.lines().any(|line| line.trim_start().starts_with(crate_name)),
            "lockstep-core must not depend on {crate_name}"
        );
    }
}
