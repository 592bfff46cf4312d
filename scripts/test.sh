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

# etcdctl (etcd-client) and etcd (etcd-server): the etcd compatibility tests drive them.
missing=()
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]} (Debian packages)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The package may start a system etcd on 2379; the tests start their own.
    if command -v systemctl >/dev/null 2>&1; then $sudo systemctl stop etcd 2>/dev/null || true; fi
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "==> cargo test --workspace"
cargo test --workspace
