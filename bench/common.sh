# Sourced by the benchmarks in this folder, from the repository's top.
#
# bench_setup NAME [COMMAND=PACKAGE ...]: installs the missing commands from Debian's packages,
# builds lockstep (release), and sets LOCKSTEP (the binary), WORK (a fresh directory under
# target/bench for this run) and PIDS (processes killed when the script exits).
bench_setup() {
    local name="$1"
    shift
    bash scripts/ensure-packages.sh "$@"
    echo "==> cargo build --release"
    cargo build --release --quiet
    LOCKSTEP="$PWD/target/release/lockstep"
    WORK="$PWD/target/bench/$name-$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$WORK"
    PIDS=()
    trap bench_cleanup EXIT INT TERM
}

bench_cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

# start_etcd CLIENT_BASE PEER_BASE [ETCD ARGUMENTS...]: a 3-member etcd on loopback, clients on
# ports CLIENT_BASE+1..3, peers on PEER_BASE+1..3, data under $WORK. Sets ETCD_ENDPOINTS and
# ETCD_PIDS (also in PIDS).
start_etcd() {
    local client_base="$1" peer_base="$2" initial="" n
    shift 2
    for n in 1 2 3; do
        initial+="n$n=http://127.0.0.1:$((peer_base + n)),"
    done
    ETCD_PIDS=()
    ETCD_ENDPOINTS=""
    for n in 1 2 3; do
        etcd --name "n$n" --data-dir "$WORK/etcd-$n" \
            --listen-client-urls "http://127.0.0.1:$((client_base + n))" \
            --advertise-client-urls "http://127.0.0.1:$((client_base + n))" \
            --listen-peer-urls "http://127.0.0.1:$((peer_base + n))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((peer_base + n))" \
            --initial-cluster "${initial%,}" --initial-cluster-state new \
            --initial-cluster-token bench "$@" >"$WORK/etcd-$n.log" 2>&1 &
        ETCD_PIDS+=($!)
        PIDS+=($!)
        ETCD_ENDPOINTS+="127.0.0.1:$((client_base + n)),"
    done
    ETCD_ENDPOINTS="${ETCD_ENDPOINTS%,}"
}

# proc_sum FILE AWK-PROGRAM PID...: a figure summed over processes, from /proc/PID/FILE
# (a process that is gone counts 0). CPU ticks: proc_sum stat '{print $14 + $15}' PIDS...;
# resident KiB: proc_sum status '/^VmRSS:/ {print $2}' PIDS...
proc_sum() {
    local file="$1" program="$2" total=0 pid
    shift 2
    for pid in "$@"; do
        total=$((total + $(awk "$program" "/proc/$pid/$file" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# wait_for_etcd_api ENDPOINTS...: waits (up to about 30 s) until each comma-separated list of
# etcd endpoints answers a put through `lockstep bench`.
wait_for_etcd_api() {
    local endpoints ready
    for _ in $(seq 1 100); do
        ready=1
        for endpoints in "$@"; do
            if ! "$LOCKSTEP" bench --target etcd --endpoints "$endpoints" --duration 0.2 \
                    --warmup 0 --concurrency 1 --output json >/dev/null 2>&1; then
                ready=0
                break
            fi
        done
        [ "$ready" = 1 ] && return 0
        sleep 0.3
    done
}
