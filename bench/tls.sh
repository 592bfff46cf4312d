#!/usr/bin/env bash
# What TLS costs: two 3-replica lockstep clusters on loopback, one in plaintext and one with TLS
# on every port (`lockstep up --tls`: client certificates required), both running at once; the
# same workloads against each with the same client (`lockstep bench`, native protocol and etcd's
# API), alternating round after round; throughput, p99 and the servers' CPU per request (summed
# over each cluster's three processes, from /proc).
#
#   bash bench/tls.sh                         # 2 rounds of 20 s per workload and cluster
#   ROUNDS=1 SECONDS_EACH=5 bash bench/tls.sh # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-2}"
SECONDS_EACH="${SECONDS_EACH:-20}"
WARMUP="${WARMUP:-2}"

source bench/common.sh
bench_setup tls python3=python3
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"

"$LOCKSTEP" up --data-dir "$WORK/plain" --port 24100 --etcd-port 24379 --no-restart \
    >"$WORK/plain-up.log" 2>&1 &
PIDS+=($!)
"$LOCKSTEP" up --tls --data-dir "$WORK/tls" --port 25100 --etcd-port 25379 --no-restart \
    >"$WORK/tls-up.log" 2>&1 &
PIDS+=($!)
TLS_FLAGS=(--cacert "$WORK/tls/tls/ca.pem" --cert "$WORK/tls/tls/client.pem" --key "$WORK/tls/tls/client-key.pem")

echo "==> waiting for the clusters"
for attempt in $(seq 1 100); do
    if "$LOCKSTEP" put ready yes --endpoints 127.0.0.1:24101,127.0.0.1:24102,127.0.0.1:24103 \
            --timeout 1 >/dev/null 2>&1 &&
        "$LOCKSTEP" put ready yes --endpoints 127.0.0.1:25101,127.0.0.1:25102,127.0.0.1:25103 \
            --timeout 1 "${TLS_FLAGS[@]}" >/dev/null 2>&1; then
        break
    fi
    sleep 0.3
done

server_ticks() { # cluster
    # shellcheck disable=SC2046
    proc_sum stat '{print $14 + $15}' $(pgrep -f "lockstep serve .*$WORK/$1/" | tr '\n' ' ')
}
run() { # cluster workload target endpoints args...
    local cluster="$1" workload="$2" target="$3" endpoints="$4" before after json
    shift 4
    local extra=()
    if [ "$cluster" = tls ]; then extra=("${TLS_FLAGS[@]}"); fi
    before=$(server_ticks "$cluster")
    json=$("$LOCKSTEP" bench --target "$target" --endpoints "$endpoints" --connections 4 \
        --duration "$SECONDS_EACH" --warmup "$WARMUP" --key-size 16 --value-size 128 \
        --output json "${extra[@]}" "$@")
    after=$(server_ticks "$cluster")
    echo "{\"cluster\": \"$cluster\", \"workload\": \"$workload\", \"cpu_ticks\": $((after - before)), \"ticks_per_second\": $(getconf CLK_TCK), \"seconds\": $((SECONDS_EACH + WARMUP)), \"result\": $json}" >>"$RESULTS"
    echo "   $cluster $workload: $(echo "$json" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f/s p99 %.2f ms" % (r["per_second"], r["latency_ms"]["p99"]))')"
}
native() { # cluster
    if [ "$1" = tls ]; then echo 127.0.0.1:25101,127.0.0.1:25102,127.0.0.1:25103;
    else echo 127.0.0.1:24101,127.0.0.1:24102,127.0.0.1:24103; fi
}
etcd_api() { # cluster
    if [ "$1" = tls ]; then echo 127.0.0.1:25379,127.0.0.1:35379,127.0.0.1:45379;
    else echo 127.0.0.1:24379,127.0.0.1:34379,127.0.0.1:44379; fi
}
for round in $(seq 1 "$ROUNDS"); do
    echo "==> round $round of $ROUNDS"
    for workload in put get; do
        for cluster in plain tls; do
            run "$cluster" "native-$workload-64" native "$(native "$cluster")" \
                --workload "$workload" --concurrency 64
            run "$cluster" "etcd-$workload-64" etcd "$(etcd_api "$cluster")" \
                --workload "$workload" --concurrency 64
        done
    done
done

MACHINE="$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), lockstep $(git rev-parse --short HEAD)"
python3 - "$RESULTS" "$MACHINE" "$ROUNDS" "$SECONDS_EACH" <<'PY'
import json, statistics, sys
path, machine, rounds, seconds = sys.argv[1:5]
runs = [json.loads(line) for line in open(path)]
def figures(cluster, workload):
    rows = [r for r in runs if r["cluster"] == cluster and r["workload"] == workload]
    rate = statistics.median(r["result"]["per_second"] for r in rows)
    p99 = statistics.median(r["result"]["latency_ms"]["p99"] for r in rows)
    cpu = statistics.median(
        r["cpu_ticks"] / r["ticks_per_second"] / (r["result"]["per_second"] * r["seconds"]) * 1e6
        for r in rows)
    return rate, p99, cpu
print(f"\n{machine}; {rounds} rounds of {seconds} s, medians\n")
print("| workload (64 in flight) | plaintext req/s | TLS req/s | ratio | plaintext p99 ms | TLS p99 ms | plaintext CPU µs/req | TLS CPU µs/req | CPU ratio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for workload in ["native-put-64", "etcd-put-64", "native-get-64", "etcd-get-64"]:
    plain, tls = figures("plain", workload), figures("tls", workload)
    print(f"| {workload} | {plain[0]:,.0f} | {tls[0]:,.0f} | {tls[0]/plain[0]:.2f}x | {plain[1]:.2f} | {tls[1]:.2f} | {plain[2]:.0f} | {tls[2]:.0f} | {tls[2]/plain[2]:.2f} |")
PY
echo "logs and raw results: $WORK"
