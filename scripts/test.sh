#!/usr/bin/env bash
# The one test command: installs what the tests need from the system (etcd's etcdctl and
# server, from Debian's packages, to test etcd compatibility against the real thing), then
# checks formatting and lints and runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is needed: install Rust from https://rustup.rs" >&2
    exit 1
fi

# etcdctl (etcd-client) and etcd (etcd-server): the etcd compatibility tests drive them;
# nft (nftables): the fault harness cuts and drops traffic between network namespaces with it;
# curl: the etcd port's plain HTTP paths are tested with it.
bash scripts/ensure-packages.sh etcdctl=etcd-client etcd=etcd-server nft=nftables curl=curl

# A one-shot run gains nothing from incremental compilation's caches, which double the disk used.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (warnings are errors), as released and with the test-only switches"
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

# The deliberately broken builds (`sabotage`) that show the checkers catch what they check
# compile only with the `sabotage` feature: the tests turn it on, a release build does not.
echo "==> cargo test --workspace --all-features"
cargo test --workspace --all-features

echo "==> a release build has no sabotage switches"
cargo build --release --quiet
if refused=$(./target/release/lockstep serve --sabotage early-ack 2>&1); then
    echo "a release build accepted --sabotage" >&2
    exit 1
fi
if ! grep -q "this build has no sabotage switches" <<<"$refused"; then
    echo "a release build given --sabotage said: $refused" >&2
    exit 1
fi
echo "refused: $refused" | head -1
