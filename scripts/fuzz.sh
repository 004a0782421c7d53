#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/), each for a bounded time, starting
# from the corpus in the repository plus every recorded regression input.
#
#   scripts/fuzz.sh [--seconds N] [--keep] [TARGET...]
#
# N defaults to $FUZZ_SECONDS, else 30. With no TARGET, all of them. The
# machine's own toolchain (stable) builds them: cargo fuzz with
# `--sanitizer none`, so coverage guidance and debug assertions but no
# AddressSanitizer (the code under test has no unsafe memory handling of
# its own beyond guest memory, which vm-memory bounds-checks).
#
# Each target's longest input (-max_len) is 4096 bytes, or its longest seed
# (corpus or regression) when that is longer, so that every seed is fuzzed
# whole; the table shows it.
#
# New inputs the fuzzer finds go to a scratch folder, not into the repo.
# With --keep, those that reach code (edges) the corpus does not are
# added to fuzz/corpus/TARGET (libFuzzer's -set_cover_merge, without hit
# counts, which keeps the corpus small), to be committed.
# A crash stops the run with exit code 1 and the input's path. Make it a
# regression: copy it to fuzz/regressions/TARGET/<what-it-does>, mend the
# bug, and add a focused unit test; tests/tests/fuzz_corpus.rs replays
# every file there in the ordinary test run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -f $HOME/.cargo/env ]] && . "$HOME/.cargo/env"

seconds=${FUZZ_SECONDS:-30}
keep=0
targets=()
while (($#)); do
    case $1 in
        --seconds) seconds=${2-}; shift; (($#)) && shift ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        -*) echo "fuzz: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
    echo "fuzz: --seconds takes a positive whole number, not '$seconds'" >&2
    exit 2
fi
all=(virtio_blk virtio_net virtio_mmio config_json kernel_image image_layer api_request snapshot_state overlay_header oci_config)
((${#targets[@]})) || targets=("${all[@]}")
for t in "${targets[@]}"; do
    [[ -f fuzz/fuzz_targets/$t.rs ]] || { echo "fuzz: no target '$t' (one of: ${all[*]})" >&2; exit 2; }
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is missing; scripts/setup.sh installs it" >&2
    exit 1
fi
cargo fuzz build --sanitizer none >&2
bin=fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release
scratch=$(mktemp -d /tmp/vmm-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

status=0
printf '%-14s %8s %8s %10s %8s %9s  %s\n' target seconds max_len runs exec/s coverage result
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "$scratch/artifacts"
    inputs=(fuzz/corpus/"$t")
    [[ -d fuzz/regressions/$t ]] && inputs+=(fuzz/regressions/"$t")
    log=$scratch/$t.log
    max_len=4096
    longest=$(find "${inputs[@]}" -type f -printf '%s\n' | sort -n | tail -n 1)
    ((${longest:-0} > max_len)) && max_len=$longest
    set +e
    "$bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" \
        -print_final_stats=1 -artifact_prefix="$scratch/artifacts/$t-" \
        "$scratch/$t" "${inputs[@]}" >"$log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    if ((rc == 0)); then
        result=ok
    else
        status=1
        kept=fuzz/artifacts/$t
        mkdir -p "$kept"
        cp "$scratch"/artifacts/"$t"-* "$kept"/ 2>/dev/null || true
        result="FAILED (exit $rc): inputs kept in $kept"
    fi
    printf '%-14s %8s %8s %10s %8s %9s  %s\n' "$t" "$seconds" "$max_len" "${runs:-?}" "${speed:-?}" "${cov:-?}" "$result"
    if ((rc == 0 && keep)); then
        "$bin/$t" -set_cover_merge=1 -use_counters=0 -max_len="$max_len" -timeout=10 \
            fuzz/corpus/"$t" "$scratch/$t" >"$scratch/$t.merge" 2>&1
        grep -o 'MERGE-OUTER: [0-9]* new files' "$scratch/$t.merge" | sed "s|^|$t: |" >&2
    fi
    if ((rc != 0)); then
        grep -E "panicked at|assertion|ERROR: libFuzzer|SUMMARY" -A3 "$log" | head -20 >&2
    fi
done
exit $status
