#!/usr/bin/env bash
# Installs the Debian packages that provide missing commands, then stops any service a package
# started (the tests and benchmarks start their own, on their own ports).
#
#   bash scripts/ensure-packages.sh COMMAND=PACKAGE ...    e.g. etcdctl=etcd-client
set -euo pipefail

missing=()
for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "==> installing ${missing[*]} (Debian packages)"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl stop etcd redis-server 2>/dev/null || true
fi
