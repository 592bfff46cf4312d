#!/usr/bin/env bash
# What auditing costs: three 3-replica lockstep clusters on this machine, one with the audit
# off, one with it on (the default: output chains reported, state digests compared), one with
# verified outputs (the leader answers only once a majority reported the same output chain).
# Same client, same workloads, alternating round after round; prints a table with the ratios
# to the audit-off cluster and writes it into docs/BENCHMARKS.md.
#
#   bash bench/audit.sh                    # about 2 minutes
#   ROUNDS=1 SECONDS_EACH=3 bash bench/audit.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
SECONDS_EACH="${SECONDS_EACH:-5}"
WARMUP="${WARMUP:-1}"
WRITE_DOCS="${WRITE_DOCS:-1}"

source bench/common.sh
bench_setup audit python3=python3
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"

# mode | port | flags
MODES=("off|25100|--no-audit" "on|26100|" "verified|27100|--verified-outputs")
for entry in "${MODES[@]}"; do
    IFS='|' read -r mode port flags <<<"$entry"
    # shellcheck disable=SC2086
    "$LOCKSTEP" up --data-dir "$WORK/$mode" --port "$port" --etcd-port 0 --no-restart $flags \
        >"$WORK/$mode-up.log" 2>&1 &
    PIDS+=($!)
done
endpoints() { echo "127.0.0.1:$(($1 + 1)),127.0.0.1:$(($1 + 2)),127.0.0.1:$(($1 + 3))"; }

echo "==> waiting for the clusters"
for entry in "${MODES[@]}"; do
    IFS='|' read -r mode port flags <<<"$entry"
    for _ in $(seq 1 100); do
        if "$LOCKSTEP" bench --endpoints "$(endpoints "$port")" --duration 0.2 --warmup 0 \
                --concurrency 1 --output json >/dev/null 2>&1; then
            break
        fi
        sleep 0.3
    done
done

WORKLOADS=(
    "put-1|--workload put --concurrency 1"
    "put-64|--workload put --concurrency 64"
    "get-64|--workload get --concurrency 64"
)
for round in $(seq 1 "$ROUNDS"); do
    echo "==> round $round of $ROUNDS"
    for workload in "${WORKLOADS[@]}"; do
        name="${workload%%|*}"
        args="${workload#*|}"
        for entry in "${MODES[@]}"; do
            IFS='|' read -r mode port flags <<<"$entry"
            # shellcheck disable=SC2086
            json=$("$LOCKSTEP" bench --endpoints "$(endpoints "$port")" --connections 4 \
                --duration "$SECONDS_EACH" --warmup "$WARMUP" --key-size 16 --value-size 128 \
                --output json $args)
            echo "{\"mode\": \"$mode\", \"workload\": \"$name\", \"result\": $json}" >>"$RESULTS"
            echo "   $mode $name: $(echo "$json" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f/s p50 %.2f ms p99 %.2f ms" % (r["per_second"], r["latency_ms"]["p50"], r["latency_ms"]["p99"]))')"
        done
    done
done

MACHINE="$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), $(df -T "$WORK" | awk 'NR==2 {print $2}') file system"
python3 - "$RESULTS" "$MACHINE" "$(git rev-parse --short HEAD)" "$ROUNDS" "$SECONDS_EACH" "$WRITE_DOCS" <<'PY'
import json, statistics, sys, datetime, re
path, machine, commit, rounds, seconds, write_docs = sys.argv[1:7]
runs = [json.loads(line) for line in open(path)]
def median(mode, workload, field):
    values = [r["result"]["per_second"] if field == "rate" else r["result"]["latency_ms"][field]
              for r in runs if r["mode"] == mode and r["workload"] == workload]
    return statistics.median(values)
lines = [
    "| workload | audit off | audit on | verified outputs | on / off | verified / off | p50 off / on / verified (ms) | p99 off / on / verified (ms) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]
for workload in ["put-1", "put-64", "get-64"]:
    rates = [median(mode, workload, "rate") for mode in ["off", "on", "verified"]]
    p50 = [median(mode, workload, "p50") for mode in ["off", "on", "verified"]]
    p99 = [median(mode, workload, "p99") for mode in ["off", "on", "verified"]]
    lines.append(
        f"| {workload} | {rates[0]:,.0f}/s | {rates[1]:,.0f}/s | {rates[2]:,.0f}/s | "
        f"{rates[1] / rates[0]:.2f}x | {rates[2] / rates[0]:.2f}x | "
        f"{p50[0]:.2f} / {p50[1]:.2f} / {p50[2]:.2f} | {p99[0]:.2f} / {p99[1]:.2f} / {p99[2]:.2f} |"
    )
table = "\n".join(lines)
print(table)
if write_docs == "1":
    section = (
        "<!-- audit:begin -->\n"
        f"Measured {datetime.date.today()} with `bash bench/audit.sh` ({rounds} rounds of {seconds} s, "
        f"medians; {machine}; lockstep {commit}): three 3-replica clusters on loopback, "
        "the audit off (`--no-audit`), on (the default), and with verified outputs "
        "(`--verified-outputs`); `lockstep bench --target native`, 16-byte keys, 128-byte values.\n\n"
        + table + "\n<!-- audit:end -->"
    )
    docs = open("docs/BENCHMARKS.md").read()
    if "<!-- audit:begin -->" in docs:
        docs = re.sub(r"<!-- audit:begin -->.*?<!-- audit:end -->", lambda _: section, docs, flags=re.S)
    else:
        docs += "\n## What auditing costs\n\n" + section + "\n"
    open("docs/BENCHMARKS.md", "w").write(docs)
    print("written into docs/BENCHMARKS.md")
PY
