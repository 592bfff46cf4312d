#!/usr/bin/env bash
# A soak: minutes of closed-loop puts against a fresh 3-replica cluster, the state growing as a
# user's would (history kept, as etcd keeps it by default), reported per 10-second window.
#
# For each audit setting (on, the default, and off) it starts `lockstep up`, runs
# `lockstep bench --workload put --concurrency 256 --window 10`, samples every server's
# resident memory and CPU time every 10 s, and checks:
#   - one term throughout (no leader lost), and no request failed;
#   - the last minute's throughput at least 90% of the first minute's.
# It prints a table per run and exits non-zero if a check failed.
#
#   bash bench/soak.sh                          # 10 minutes, audit on then off (about 21 min)
#   DURATION=120 AUDIT_MODES=on bash bench/soak.sh   # a shorter look
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-600}"
CONCURRENCY="${CONCURRENCY:-256}"
WINDOW="${WINDOW:-10}"
AUDIT_MODES="${AUDIT_MODES:-on off}"
PORT="${PORT:-25100}"

source bench/common.sh
bench_setup soak python3=python3
ENDPOINTS="127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2)),127.0.0.1:$((PORT + 3))"

UP_PID=""
SAMPLER_PID=""

# Every 10 s: seconds since start, then per server pid its resident KiB and CPU ticks.
sample() {
    local data="$1" out="$2" start
    start=$(date +%s)
    while true; do
        local line="$(( $(date +%s) - start ))"
        for pid in $(pgrep -f "lockstep serve .*$data" || true); do
            local rss ticks
            rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
            ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
            line+=" $pid:$rss:$ticks"
        done
        echo "$line" >>"$out"
        sleep "$WINDOW"
    done
}

status_terms() {
    "$LOCKSTEP" status --endpoints "$ENDPOINTS" --output json | python3 -c '
import json, sys
replicas = json.load(sys.stdin)["replicas"]
print(" ".join(str(r.get("term", "?")) for r in replicas))'
}

failed=0
for audit in $AUDIT_MODES; do
    data="$WORK/audit-$audit"
    flags=()
    [ "$audit" = "off" ] && flags=(--no-audit)
    "$LOCKSTEP" up --data-dir "$data" --port "$PORT" --etcd-port 0 --no-restart "${flags[@]}" \
        >"$WORK/up-$audit.log" 2>&1 &
    UP_PID=$!
    PIDS+=("$UP_PID")
    for _ in $(seq 1 100); do
        if "$LOCKSTEP" put soak/ready yes --endpoints "$ENDPOINTS" >/dev/null 2>&1; then break; fi
        sleep 0.2
    done
    terms_before=$(status_terms)
    : >"$WORK/samples-$audit.txt"
    sample "$data" "$WORK/samples-$audit.txt" &
    SAMPLER_PID=$!
    PIDS+=("$SAMPLER_PID")
    echo "==> audit $audit: $DURATION s of puts at $CONCURRENCY in flight (terms at start: $terms_before)"
    "$LOCKSTEP" bench --endpoints "$ENDPOINTS" --workload put --concurrency "$CONCURRENCY" \
        --duration "$DURATION" --window "$WINDOW" --output json >"$WORK/bench-$audit.json"
    terms_after=$(status_terms)
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    kill "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
    UP_PID=""
    if ! python3 - "$WORK/bench-$audit.json" "$WORK/samples-$audit.txt" "$audit" \
        "$terms_before" "$terms_after" "$WINDOW" <<'EOF'
import json, os, sys
bench_path, samples_path, audit, before, after, window = sys.argv[1:7]
window = float(window)
bench = json.load(open(bench_path))
ticks_per_second = os.sysconf("SC_CLK_TCK")
samples = []
for line in open(samples_path):
    parts = line.split()
    if not parts:
        continue
    procs = [p.split(":") for p in parts[1:]]
    rss = sum(int(p[1]) for p in procs) / 1024
    ticks = sum(int(p[2]) for p in procs)
    samples.append((int(parts[0]), rss, ticks))
print(f"audit {audit}: {bench['requests']} puts in {bench['seconds']:.0f} s = "
      f"{bench['per_second']:.0f}/s, {bench['errors']} errors, p99 {bench['latency_ms']['p99']:.1f} ms; "
      f"terms {before} -> {after}")
print("| from s | puts/s | p50 ms | p99 ms | max ms | errors | servers' RSS MiB (sum) | server CPU µs/put |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
previous = None
for n, w in enumerate(bench["windows"]):
    if w["seconds"] < 1:
        continue  # the last moments of the run, too short to say anything
    # The sample nearest the window's end.
    end = w["start_seconds"] + w["seconds"]
    near = min(samples, key=lambda s: abs(s[0] - end)) if samples else None
    rss = f"{near[1]:.0f}" if near else "?"
    cpu = "?"
    if near and previous and w["requests"]:
        cpu = f"{(near[2] - previous[2]) / ticks_per_second * 1e6 / w['requests']:.0f}"
    previous = near
    print(f"| {w['start_seconds']:.0f} | {w['per_second']:.0f} | {w['latency_ms']['p50']:.2f} | "
          f"{w['latency_ms']['p99']:.2f} | {w['latency_ms']['max']:.1f} | {w['errors']} | {rss} | {cpu} |")
per_minute = max(1, int(60 / window))
windows = [w for w in bench["windows"] if w["seconds"] >= window * 0.99]
problems = []
if before != after or len(set(before.split())) != 1:
    problems.append(f"the term changed: {before} -> {after}")
if bench["errors"]:
    problems.append(f"{bench['errors']} requests failed (first: {bench.get('first_error')})")
if len(windows) >= 2 * per_minute:
    first = sum(w["requests"] for w in windows[:per_minute])
    last = sum(w["requests"] for w in windows[-per_minute:])
    print(f"last minute / first minute throughput: {last / first:.2f}")
    if last < 0.9 * first:
        problems.append(f"the last minute did {last / first:.0%} of the first minute's puts")
for problem in problems:
    print(f"FAILED: {problem}")
sys.exit(1 if problems else 0)
EOF
    then
        failed=1
    fi
    du -sh "$data" | sed 's/^/data on disk: /'
done
echo "(raw results in $WORK)"
exit "$failed"
