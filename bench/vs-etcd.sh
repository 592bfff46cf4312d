#!/usr/bin/env bash
# lockstep and etcd side by side on this machine, in one run.
#
# Starts a 3-member etcd and a 3-replica lockstep on loopback, their data on the same file
# system and both syncing every write to disk; runs the same workloads against each with the
# same client (`lockstep bench`: etcd's v3 API through one gRPC client for both, and lockstep's
# native client too), alternating lockstep and etcd round after round so that drift on this
# shared machine falls on both; runs Redis with `appendfsync always` as a single-node
# reference; prints a table with the ratios and the servers' CPU time per request (summed over
# the three server processes of each system, from /proc: it does not depend on how much of the
# machine the load generator takes) and writes it into docs/BENCHMARKS.md.
#
#   bash bench/vs-etcd.sh                 # the full run (a few minutes)
#   ROUNDS=1 SECONDS_EACH=3 bash bench/vs-etcd.sh   # a quick look
#   COMPACT=10000 bash bench/vs-etcd.sh   # both keep only the newest 10,000 revisions
#                                         # (etcd's revision auto-compaction; lockstep's)
#   MEMORY_KEYS=0 bash bench/vs-etcd.sh   # skip the memory phase (1,000,000 keys loaded into
#                                         # each, resident memory per key)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-2}"
SECONDS_EACH="${SECONDS_EACH:-5}"
WARMUP="${WARMUP:-1}"
WRITE_DOCS="${WRITE_DOCS:-1}"
COMPACT="${COMPACT:-0}"
MEMORY_KEYS="${MEMORY_KEYS:-1000000}"
ETCD_COMPACTION=()
LOCKSTEP_COMPACTION=()
if [ "$COMPACT" != "0" ]; then
    ETCD_COMPACTION=(--auto-compaction-mode=revision "--auto-compaction-retention=$COMPACT")
    LOCKSTEP_COMPACTION=(--auto-compact-revisions "$COMPACT")
fi

source bench/common.sh
bench_setup vs-etcd etcd=etcd-server redis-server=redis-server redis-benchmark=redis-tools \
    python3=python3
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"

# etcd: 3 members on loopback (clients on 23791-23793).
start_etcd 23790 23800 "${ETCD_COMPACTION[@]}"

# lockstep: 3 replicas (separate processes) with etcd's API on 24379, 34379, 44379.
"$LOCKSTEP" up --data-dir "$WORK/lockstep" --port 24100 --etcd-port 24379 --no-restart \
    "${LOCKSTEP_COMPACTION[@]}" \
    >"$WORK/lockstep-up.log" 2>&1 &
PIDS+=($!)
LOCKSTEP_ETCD="127.0.0.1:24379,127.0.0.1:34379,127.0.0.1:44379"
LOCKSTEP_NATIVE="127.0.0.1:24101,127.0.0.1:24102,127.0.0.1:24103"

# Redis, one node, every write synced.
redis-server --port 26379 --dir "$WORK" --appendonly yes --appendfsync always --save "" \
    --daemonize no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)

echo "==> waiting for the clusters"
wait_for_etcd_api "$ETCD_ENDPOINTS" "$LOCKSTEP_ETCD"

# name | bench arguments
WORKLOADS=(
    "put-1|--workload put --concurrency 1"
    "put-64|--workload put --concurrency 64"
    "put-256|--workload put --concurrency 256"
    "get-64|--workload get --concurrency 64"
    "get-serializable-64|--workload get-serializable --concurrency 64"
    "mixed-90-10-64|--workload mixed --read-percent 90 --concurrency 64"
    "cas-64|--workload cas --concurrency 64"
)
# A system's three server processes.
server_pids() { # system
    if [ "$1" = etcd ]; then
        echo "${ETCD_PIDS[*]}"
    else
        pgrep -f "lockstep serve .*$WORK/lockstep" | tr '\n' ' '
    fi
}
# A figure summed over a system's three server processes: awk program over /proc/PID/FILE.
server_sum() { # system file awk-program
    # shellcheck disable=SC2046
    proc_sum "$2" "$3" $(server_pids "$1")
}
# CPU ticks (user + system) so far; resident KiB.
server_ticks() { server_sum "$1" stat '{print $14 + $15}'; }
server_rss_kib() { server_sum "$1" status '/^VmRSS:/ {print $2}'; }
run() { # system workload target endpoints args...
    local system="$1" workload="$2" target="$3" endpoints="$4"
    shift 4
    local json before after
    before=$(server_ticks "$system")
    json=$("$LOCKSTEP" bench --target "$target" --endpoints "$endpoints" --connections 4 \
        --duration "$SECONDS_EACH" --warmup "$WARMUP" --key-size 16 --value-size 128 \
        --output json "$@")
    after=$(server_ticks "$system")
    echo "{\"system\": \"$system\", \"workload\": \"$workload\", \"cpu_ticks\": $((after - before)), \"ticks_per_second\": $(getconf CLK_TCK), \"measured_and_warmup_seconds\": $(python3 -c "print($SECONDS_EACH + $WARMUP)"), \"result\": $json}" >>"$RESULTS"
    echo "   $system $workload: $(echo "$json" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f/s p99 %.2f ms" % (r["per_second"], r["latency_ms"]["p99"]))')"
}
for round in $(seq 1 "$ROUNDS"); do
    echo "==> round $round of $ROUNDS"
    for entry in "${WORKLOADS[@]}"; do
        name="${entry%%|*}"
        args="${entry#*|}"
        # shellcheck disable=SC2086
        run lockstep-etcd-api "$name" etcd "$LOCKSTEP_ETCD" $args
        # shellcheck disable=SC2086
        run etcd "$name" etcd "$ETCD_ENDPOINTS" $args
        # shellcheck disable=SC2086
        run lockstep-native "$name" native "$LOCKSTEP_NATIVE" $args
    done
done

echo "==> redis-benchmark (SET, 64 clients, appendfsync always)"
REDIS=$(redis-benchmark -p 26379 -t set -c 64 -n 200000 -d 128 -r 10000 --csv 2>/dev/null | tail -1)
echo "   $REDIS"

MEMORY=""
if [ "$MEMORY_KEYS" != "0" ]; then
    echo "==> memory: $MEMORY_KEYS keys with 128-byte values written into each, resident memory"
    for entry in "etcd|$ETCD_ENDPOINTS" "lockstep|$LOCKSTEP_ETCD"; do
        system="${entry%%|*}"
        endpoints="${entry#*|}"
        before=$(server_rss_kib "$system")
        "$LOCKSTEP" bench --target etcd --endpoints "$endpoints" --workload put --sequential \
            --keys "$MEMORY_KEYS" --duration 3600 --warmup 0 --concurrency 64 --connections 4 \
            --key-size 16 --value-size 128 --output json >"$WORK/memory-$system.json"
        sleep 2
        after=$(server_rss_kib "$system")
        per_key=$(( (after - before) * 1024 / 3 / MEMORY_KEYS ))
        echo "   $system: $((before / 1024)) MiB -> $((after / 1024)) MiB over three members: $per_key bytes per key per member"
        MEMORY+="$system=$per_key;"
    done
fi

MACHINE="$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), $(df -T "$WORK" | awk 'NR==2 {print $2}') file system"
VERSIONS="etcd $(etcd --version | awk '/etcd Version/ {print $3}'), $(redis-server --version | awk '{print $1, $3}'), lockstep $(git rev-parse --short HEAD)"
python3 - "$RESULTS" "$REDIS" "$MACHINE" "$VERSIONS" "$ROUNDS" "$SECONDS_EACH" "$WRITE_DOCS" "$COMPACT" "$MEMORY" "$MEMORY_KEYS" <<'PY'
import json, statistics, sys, datetime, re
results_path, redis, machine, versions, rounds, seconds, write_docs, compact, memory, memory_keys = sys.argv[1:11]
memory = dict(item.split("=") for item in memory.split(";") if item)
runs = [json.loads(line) for line in open(results_path)]
def cpu_us_per_request(run):
    # The servers' CPU over the warm-up and the measurement, over the requests of both (the
    # warm-up's counted at the measured rate).
    r = run["result"]
    requests = r["per_second"] * run["measured_and_warmup_seconds"]
    return run["cpu_ticks"] / run["ticks_per_second"] * 1e6 / requests if requests else float("nan")
def median(system, workload, field):
    values = []
    for run in runs:
        if run["system"] == system and run["workload"] == workload:
            r = run["result"]
            if field == "rate":
                values.append(r["per_second"])
            elif field == "cpu":
                values.append(cpu_us_per_request(run))
            else:
                values.append(r["latency_ms"][field])
    return statistics.median(values) if values else float("nan")
workloads = []
for run in runs:
    if run["workload"] not in workloads:
        workloads.append(run["workload"])
lines = [
    "| workload | lockstep (etcd API) req/s | etcd req/s | ratio | lockstep p99 ms | etcd p99 ms | p99 ratio | lockstep CPU µs/req | etcd CPU µs/req | CPU ratio | lockstep native req/s | native p99 ms | native CPU µs/req |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for w in workloads:
    l, e, n = median("lockstep-etcd-api", w, "rate"), median("etcd", w, "rate"), median("lockstep-native", w, "rate")
    lp, ep, np_ = median("lockstep-etcd-api", w, "p99"), median("etcd", w, "p99"), median("lockstep-native", w, "p99")
    lc, ec, nc = median("lockstep-etcd-api", w, "cpu"), median("etcd", w, "cpu"), median("lockstep-native", w, "cpu")
    lines.append(f"| {w} | {l:,.0f} | {e:,.0f} | {l/e:.2f}x | {lp:.2f} | {ep:.2f} | {lp/ep:.2f} | {lc:.0f} | {ec:.0f} | {lc/ec:.2f} | {n:,.0f} | {np_:.2f} | {nc:.0f} |")
redis_rate = ""
m = re.findall(r'"([0-9.]+)"', redis)
if m:
    redis_rate = f"{float(m[0]):,.0f}"
table = "\n".join(lines)
print()
print(table)
print()
print(f"Redis (one node, appendfsync always), SET at 64 clients: {redis_rate} req/s")
memory_line = ""
if memory:
    e, l = int(memory.get("etcd", 0)), int(memory.get("lockstep", 0))
    ratio = f"{l / e:.2f}x" if e else "?"
    memory_line = (f"Memory: {int(memory_keys):,} keys with 16-byte keys and 128-byte values written "
        f"into each (after the rounds above), resident memory grown per key per member: etcd "
        f"{e:,} bytes, lockstep {l:,} bytes ({ratio}; etcd's includes the pages of its database "
        f"file it touched).")
    print(memory_line)
if write_docs == "1":
    day = datetime.date.today().isoformat()
    compaction = ("History is never compacted (both systems' default)." if compact == "0" else
        f"Both keep only the newest {compact} revisions (`COMPACT={compact}`: etcd's revision "
        f"auto-compaction, lockstep's `--auto-compact-revisions`).")
    section = f"""<!-- vs-etcd:begin -->
## lockstep and etcd side by side

`bash bench/vs-etcd.sh` ({rounds} rounds of {seconds} s per workload and system, alternating;
medians shown). Both clusters have three members on loopback, their data on the same file
system, every write synced to disk; one client (`lockstep bench`, 4 connections, 16-byte keys,
128-byte values, 10,000 keys) drives etcd's v3 API on both, and lockstep's native protocol too.
Ratios are lockstep over etcd: above 1 is better for throughput, below 1 is better for p99 and
for CPU. CPU is the three server processes' user and system time (from /proc) per request,
whatever the load generator takes.
{compaction}

Run {day} on {machine}; {versions}.

{table}

Redis 7 on one node with `appendfsync always` (`redis-benchmark -t set -c 64 -d 128`), the
single-node reference: {redis_rate} SET/s.

{memory_line}
<!-- vs-etcd:end -->"""
    path = "docs/BENCHMARKS.md"
    text = open(path).read()
    if "<!-- vs-etcd:begin -->" in text:
        text = re.sub(r"<!-- vs-etcd:begin -->.*<!-- vs-etcd:end -->", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(path, "w").write(text)
    print("written to docs/BENCHMARKS.md")
PY
echo "logs and raw results: $WORK"
