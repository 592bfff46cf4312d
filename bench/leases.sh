#!/usr/bin/env bash
# Lease keep-alives side by side: lockstep's etcd API and etcd, each a 3-member cluster on
# loopback, LEASES leases each renewed once a second (open loop, LEASES keep-alives per second,
# 64 streams over 4 connections, as etcd clients keep one stream per connection) for DURATION
# seconds, through the same client (`lockstep bench --workload keep-alive`). Reports what was
# kept up, the p99, the servers' CPU per keep-alive and as a share of one core (summed over the
# three server processes, from /proc), and for lockstep the log entries the keep-alives took
# (the leader's commit index before and after).
#
#   bash bench/leases.sh                          # 5,000 leases, 2 minutes each
#   LEASES=1000 DURATION=30 bash bench/leases.sh  # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

LEASES="${LEASES:-5000}"
DURATION="${DURATION:-120}"

source bench/common.sh
bench_setup leases etcd=etcd-server python3=python3

start_etcd 23790 23800
"$LOCKSTEP" up --data-dir "$WORK/lockstep" --port 24100 --etcd-port 24379 --no-restart \
    >"$WORK/lockstep-up.log" 2>&1 &
PIDS+=($!)
LOCKSTEP_ETCD="127.0.0.1:24379,127.0.0.1:34379,127.0.0.1:44379"
LOCKSTEP_NATIVE="127.0.0.1:24101,127.0.0.1:24102,127.0.0.1:24103"

echo "==> waiting for the clusters"
wait_for_etcd_api "$ETCD_ENDPOINTS" "$LOCKSTEP_ETCD"

lockstep_commit() {
    "$LOCKSTEP" status --endpoints "$LOCKSTEP_NATIVE" --output json | python3 -c '
import json, sys
print(max(r.get("commit", 0) for r in json.load(sys.stdin)["replicas"]))'
}

bench_keep_alives() { # endpoints duration warmup
    "$LOCKSTEP" bench --target etcd --endpoints "$1" --workload keep-alive --keys "$LEASES" \
        --rate "$LEASES" --concurrency 64 --connections 4 --duration "$2" --warmup "$3" \
        --output json
}

for system in lockstep etcd; do
    if [ "$system" = etcd ]; then
        endpoints="$ETCD_ENDPOINTS"
        pids="${ETCD_PIDS[*]}"
    else
        endpoints="$LOCKSTEP_ETCD"
        pids="$(pgrep -f "lockstep serve .*$WORK/lockstep" | tr '\n' ' ')"
    fi
    echo "==> $system: granting $LEASES leases"
    bench_keep_alives "$endpoints" 0.1 0 >/dev/null
    echo "==> $system: $LEASES keep-alives per second for $DURATION s"
    commit_before=0
    [ "$system" = lockstep ] && commit_before=$(lockstep_commit)
    # shellcheck disable=SC2086
    ticks_before=$(proc_sum stat '{print $14 + $15}' $pids)
    started=$(date +%s.%N)
    bench_keep_alives "$endpoints" "$DURATION" 0 >"$WORK/$system.json"
    ended=$(date +%s.%N)
    # shellcheck disable=SC2086
    ticks_after=$(proc_sum stat '{print $14 + $15}' $pids)
    commit_after=0
    [ "$system" = lockstep ] && commit_after=$(lockstep_commit)
    echo "{\"ticks\": $((ticks_after - ticks_before)), \"hz\": $(getconf CLK_TCK), \"seconds\": $(python3 -c "print($ended - $started)"), \"entries\": $((commit_after - commit_before))}" \
        >"$WORK/$system-cpu.json"
done

python3 - "$WORK" "$LEASES" "$DURATION" <<'PY'
import json, sys
work, leases, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print(f"\n{leases} leases, each renewed once a second, {duration} s:\n")
print("| system | keep-alives/s | p99 ms | errors | server CPU µs per keep-alive | share of one core | log entries |")
print("|---|---:|---:|---:|---:|---:|---:|")
for system in ("lockstep", "etcd"):
    result = json.load(open(f"{work}/{system}.json"))
    cpu = json.load(open(f"{work}/{system}-cpu.json"))
    seconds_cpu = cpu["ticks"] / cpu["hz"]
    done = result["per_second"] * result["seconds"]
    per = seconds_cpu * 1e6 / done if done else float("nan")
    entries = cpu["entries"] if system == "lockstep" else "-"
    print(f"| {system} | {result['per_second']:,.0f} | {result['latency_ms']['p99']:.2f} | {result['errors']} | {per:.0f} | {seconds_cpu / cpu['seconds'] * 100:.1f}% | {entries} |")
PY
echo "logs and raw results: $WORK"
