#!/usr/bin/env bash
# The one test command: formatting, lints, then every test in the workspace.
# It installs nothing today; tests that need system packages will have this script
# install what is missing before running cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is needed: install Rust from https://rustup.rs" >&2
    exit 1
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "==> cargo test --workspace"
cargo test --workspace
