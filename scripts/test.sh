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
# nft (nftables): the fault harness cuts and drops traffic between network namespaces with it.
bash scripts/ensure-packages.sh etcdctl=etcd-client etcd=etcd-server nft=nftables

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "==> cargo test --workspace"
cargo test --workspace
