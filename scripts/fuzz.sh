#!/usr/bin/env bash
# Runs every cargo-fuzz target of the given fuzz crates for SECONDS
# seconds each (default 30), starting from each target's seeds, and
# prints executions and crashes per target. Installs cargo-fuzz if
# missing. Exits non-zero if any target crashes, hangs, leaks or fails to
# build; crashing inputs are left in <fuzz dir>/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS] [FUZZ_DIR...]   # default: every fuzz crate
#   scripts/fuzz.sh 10 vmm/fuzz
#   FUZZ_TARGETS="virtio_block client_hello" scripts/fuzz.sh 10
#   FUZZ_TOOLCHAIN=nightly-2026-01-01 scripts/fuzz.sh 30
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-30}"
case "$seconds" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS] [FUZZ_DIR...]" >&2; exit 2 ;;
esac
shift $(( $# > 0 ? 1 : 0 ))
dirs=("$@")
[ "${#dirs[@]}" -eq 0 ] && dirs=(mgmt-agent/fuzz vmm/fuzz)
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "error: the $toolchain toolchain is needed (rustup toolchain install $toolchain)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing; installing it (takes a few minutes)"
    cargo install cargo-fuzz --locked || exit 1
fi

failed=()
summary=()
for dir in "${dirs[@]}"; do
    fuzz_dir="$(cd "$root/$dir" 2>/dev/null && pwd)" || { echo "error: no fuzz crate at $dir" >&2; exit 2; }
    cd "$(dirname "$fuzz_dir")" || exit 1
    fuzz=(cargo +"$toolchain" fuzz)
    all="$("${fuzz[@]}" list --fuzz-dir "$fuzz_dir")" || exit 1
    targets=()
    for t in $all; do
        if [ -z "${FUZZ_TARGETS:-}" ] || [[ " $FUZZ_TARGETS " == *" $t "* ]]; then
            targets+=("$t")
        fi
    done
    [ "${#targets[@]}" -eq 0 ] && continue
    # -a: debug assertions and overflow checks, so arithmetic bugs panic.
    echo "== $dir: building ${targets[*]}"
    if ! "${fuzz[@]}" build -a --fuzz-dir "$fuzz_dir"; then
        failed+=("$dir (build)")
        summary+=("$(printf '%-18s build FAILED' "$dir")")
        continue
    fi
    for t in "${targets[@]}"; do
        echo "== $dir $t: ${seconds}s"
        mkdir -p "$fuzz_dir/corpus/$t"
        seeds=()
        [ -d "$fuzz_dir/seeds/$t" ] && seeds=("$fuzz_dir/seeds/$t")
        log="$(mktemp)"
        # -timeout: one input running over 10 s counts as a hang (failure).
        "${fuzz[@]}" run -a --fuzz-dir "$fuzz_dir" "$t" "$fuzz_dir/corpus/$t" "${seeds[@]}" -- \
            -max_total_time="$seconds" -timeout=10 -print_final_stats=1 2>&1 | tee "$log" |
            grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^Done [0-9]+ runs|panicked|ERROR|SUMMARY|Test unit written'
        rc=${PIPESTATUS[0]}
        runs="$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -1)"
        cov="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | grep -oE 'cov: [0-9]+')"
        if [ "$rc" -ne 0 ]; then
            artifact="$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -1 | cut -d' ' -f5)"
            failed+=("$t")
            summary+=("$(printf '%-18s %12s execs  1 crash  %s' "$t" "${runs:-?}" "${artifact:-exit $rc, see above}")")
        else
            summary+=("$(printf '%-18s %12s execs  0 crashes  %s' "$t" "${runs:-?}" "$cov")")
        fi
        rm -f "$log"
    done
done

echo
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all targets passed"
