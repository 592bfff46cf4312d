#!/usr/bin/env bash
# Where a write's time goes at one in flight: a fresh 3-replica cluster with the entry trace
# on (LOCKSTEP_TRACE_EVERY: every Nth log index, each replica logs when the entry reached each
# stage, on the machine's monotonic clock), `lockstep bench --concurrency 1` with the floor
# measured in the same run, then the three replicas' lines laid side by side: the median and
# 90th percentile of each step of one write's life, in microseconds.
#
#   bash bench/trace.sh                       # 20 s, every 20th entry traced
#   DURATION=60 EVERY=10 bash bench/trace.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-20}"
EVERY="${EVERY:-20}"
PORT="${PORT:-25300}"

source bench/common.sh
bench_setup trace python3=python3
ENDPOINTS="127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2)),127.0.0.1:$((PORT + 3))"
DATA="$WORK/data"

LOCKSTEP_TRACE_EVERY="$EVERY" "$LOCKSTEP" up --data-dir "$DATA" --port "$PORT" --etcd-port 0 \
    --no-restart >"$WORK/up.log" 2>&1 &
PIDS+=($!)
UP_PID=$!
for _ in $(seq 1 100); do
    if "$LOCKSTEP" put trace/ready yes --endpoints "$ENDPOINTS" >/dev/null 2>&1; then break; fi
    sleep 0.2
done
echo "==> $DURATION s of puts at 1 in flight, every ${EVERY}th entry traced"
"$LOCKSTEP" bench --endpoints "$ENDPOINTS" --workload put --concurrency 1 \
    --duration "$DURATION" --floor "$DATA" | tee "$WORK/bench.txt"
kill "$UP_PID" 2>/dev/null || true
wait "$UP_PID" 2>/dev/null || true

python3 - "$DATA" <<'EOF'
import glob, re, statistics, sys
from collections import defaultdict

line_re = re.compile(r'index=(\d+) stage="?(\w+)"? leads=(\w+) at_us=(\d+) turn_us=(\d+) queued_us=(\d+)')
# entries[index][replica][stage] = (at, turn, queued, leads)
entries = defaultdict(lambda: defaultdict(dict))
for path in glob.glob(f"{sys.argv[1]}/replica-*.log"):
    replica = re.search(r"replica-(\d+)\.log", path).group(1)
    for line in open(path, errors="replace"):
        m = line_re.search(line)
        if m:
            index, stage, leads, at, turn, queued = m.groups()
            entries[int(index)][replica][stage] = (int(at), int(turn), int(queued), leads == "true")

steps = defaultdict(list)
for index, replicas in entries.items():
    leaders = [r for r, stages in replicas.items() if stages.get("log", (0, 0, 0, False))[3]]
    if len(leaders) != 1:
        continue
    leader = replicas[leaders[0]]
    if not all(stage in leader for stage in ("log", "durable", "committed", "applied")):
        continue
    followers = [stages for r, stages in replicas.items() if r != leaders[0]
                 and "log" in stages and "durable" in stages]
    if not followers:
        continue
    # The follower whose acknowledgement came first made the commit.
    follower = min(followers, key=lambda stages: stages["durable"][0])
    start = leader["log"][2]  # the client's request queued for the leader's replica thread
    if start == 0:
        continue
    L, F = leader, follower
    steps["leader: request queued -> its turn starts"].append(L["log"][1] - start)
    steps["leader: turn -> entry proposed, appends sent"].append(L["log"][0] - L["log"][1])
    steps["network: appends sent -> queued at the follower"].append(F["log"][2] - L["log"][0])
    steps["follower: queued -> its turn starts"].append(F["log"][1] - F["log"][2])
    steps["follower: turn -> entry handed to its log thread"].append(F["log"][0] - F["log"][1])
    steps["follower: log thread (write, fdatasync, report)"].append(F["durable"][2] - F["log"][0])
    steps["follower: report queued -> acknowledgement sent"].append(F["durable"][0] - F["durable"][2])
    steps["network: acknowledgement -> queued at the leader"].append(L["committed"][2] - F["durable"][0])
    steps["leader: queued -> commit turn starts"].append(L["committed"][1] - L["committed"][2])
    steps["leader: commit turn -> applied and answered"].append(L["applied"][0] - L["committed"][1])
    steps["leader: its own log thread (in parallel)"].append(L["durable"][2] - L["log"][0])
    steps["total: request queued -> answered"].append(L["applied"][0] - start)

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]

if not steps:
    sys.exit("no traced entry with a leader and a follower; is LOCKSTEP_TRACE_EVERY reaching the servers?")
print(f"\n{len(steps['total: request queued -> answered'])} traced writes; microseconds, on the machine's monotonic clock")
print("| step | p50 µs | p90 µs |")
print("|---|---:|---:|")
for name, values in steps.items():
    print(f"| {name} | {statistics.median(values):.0f} | {pct(values, 0.9):.0f} |")
EOF
