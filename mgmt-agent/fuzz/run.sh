#!/usr/bin/env bash
# Runs every keel-mgmt fuzz target for SECONDS seconds each (default 30)
# and prints libFuzzer's exec counts. Installs cargo-fuzz if missing.
# Exits non-zero if any target crashes, hangs, leaks or fails to build;
# crashing inputs are left in mgmt-agent/fuzz/artifacts/<target>/.
#
#   mgmt-agent/fuzz/run.sh [SECONDS]
#   FUZZ_TARGETS="client_hello session_open" mgmt-agent/fuzz/run.sh 10
#   FUZZ_TOOLCHAIN=nightly-2026-01-01 mgmt-agent/fuzz/run.sh 30
set -uo pipefail

seconds="${1:-30}"
case "$seconds" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
crate_dir="$(dirname "$fuzz_dir")"
cd "$crate_dir" || exit 1

if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "error: the $toolchain toolchain is needed (rustup toolchain install $toolchain)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing; installing it (takes a few minutes)"
    cargo install cargo-fuzz --locked || exit 1
fi

targets="${FUZZ_TARGETS:-$(cargo +"$toolchain" fuzz list)}"
# -a: debug assertions and overflow checks, so arithmetic bugs panic.
echo "== building fuzz targets"
cargo +"$toolchain" fuzz build -a || exit 1

failed=()
summary=()
for t in $targets; do
    echo "== $t: ${seconds}s"
    mkdir -p "fuzz/corpus/$t"
    seeds=()
    [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
    log="$(mktemp)"
    # -timeout: one input running over 10 s counts as a hang (failure).
    cargo +"$toolchain" fuzz run -a "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 2>&1 | tee "$log" |
        grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^Done [0-9]+ runs|panicked|ERROR|SUMMARY|Test unit written'
    rc=${PIPESTATUS[0]}
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)"
    runs="$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -1)"
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        summary+=("$(printf '%-16s FAILED (exit %s); see fuzz/artifacts/%s and above' "$t" "$rc" "$t")")
    else
        summary+=("$(printf '%-16s %12s execs  %s' "$t" "${runs:-?}" "$done_line")")
    fi
    rm -f "$log"
done

echo
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all targets passed"
