#!/usr/bin/env bash
# Warm `vmm run --image` starts of two VMM builds, interleaved: the time
# each takes to build the VM (its "phase vm_built" log line: the image's
# manifest and config checked, the VM's private disk made, the kernel
# loaded, the devices made) with the image already in its cache. Made to
# compare a build that copies the cached disk for each VM with one that
# boots a copy-on-write overlay over it (docs/disks.md):
#
#   scripts/image-warm-start.sh OLD_VMM NEW_VMM IMAGE_REF [RUNS]
#
# Each binary gets an image cache of its own in a temporary directory,
# filled by one run first; each run is stopped once the VM is built (the
# guest's boot is not what is measured, so this works on kvm_pvm too).
set -euo pipefail
old=${1:?usage: image-warm-start.sh OLD_VMM NEW_VMM IMAGE_REF [RUNS]}
new=${2:?usage}
ref=${3:?usage}
runs=${4:-7}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# built BINARY CACHE: one start, stopped once built; prints the ms.
built() {
    VMM_IMAGE_CACHE=$2 "$1" run --image "$ref" --serial none --log-level info -- true \
        > /dev/null 2> "$work/err" &
    local p=$! i
    for ((i = 0; i < 6000; i++)); do
        grep -q "phase vm_built" "$work/err" && break
        kill -0 "$p" 2> /dev/null || break
        sleep 0.05
    done
    kill -9 "$p" 2> /dev/null || true
    wait "$p" 2> /dev/null || true
    grep -o "phase vm_built at [0-9.]*" "$work/err" | awk '{print $4}' | grep . ||
        { echo "no VM built:" >&2; cat "$work/err" >&2; exit 1; }
}
built "$old" "$work/cache-old" > /dev/null
built "$new" "$work/cache-new" > /dev/null
for ((r = 1; r <= runs; r++)); do
    o=$(built "$old" "$work/cache-old")
    n=$(built "$new" "$work/cache-new")
    echo "$o $n" >> "$work/times"
    printf 'run %d: old %8.1f ms   new %8.1f ms\n' "$r" "$o" "$n"
done
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
mo=$(cut -d' ' -f1 "$work/times" | median)
mn=$(cut -d' ' -f2 "$work/times" | median)
awk -v o="$mo" -v n="$mn" -v r="$runs" -v ob="$old" -v nb="$new" 'BEGIN {
    printf "median of %d warm starts, VM built: old %.1f ms (%s), new %.1f ms (%s), new/old %.3f\n",
        r, o, ob, n, nb, n / o }'
