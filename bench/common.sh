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
