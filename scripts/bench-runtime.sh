#!/usr/bin/env bash
# `podman run --rm IMAGE true` through vmm-runtime (each container a VM)
# against podman's own runtimes (crun, podman's default here, and runc),
# interleaved round by round, inside the nested AMD-V host. Run in an
# icount L1, where time is virtual and so the same from run to run:
#
#   cargo build --release --workspace
#   cargo run -q -p vmm-tests --example test_images -- /tmp/images
#   scripts/nested.sh --icount --smp 1 --memory 4G --results /tmp/rb --timeout 3000 -- \
#       scripts/bench-runtime.sh /tmp/rb /tmp/images/two.tar 10
#
# Everything each runtime reads is staged on the L1's tmpfs first (the
# runtime binaries, the guest's kernel and init, podman's storage), as a
# real host has it in its page cache. Prints a table (median, min, max in
# ms, and each runtime's median over crun's) and writes it with the samples
# to RESULTS (the first argument).
set -euo pipefail
out=${1:?usage: bench-runtime.sh RESULTS_DIR DOCKER_ARCHIVE [ROUNDS]}
archive=${2:?usage: bench-runtime.sh RESULTS_DIR DOCKER_ARCHIVE [ROUNDS]}
rounds=${3:-10}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
stage=/tmp/stage
mkdir -p "$stage/guest" "$out"
cp "$here/target/release/vmm-runtime" "$(command -v crun)" "$(command -v runc)" "$stage/"
guest=${VMM_GUEST_DIR:-${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}/current}
cp -L "$guest/vmlinux" "$guest/init" "$stage/guest/"
# podman hands its runtime a clean environment: a wrapper gives
# vmm-runtime the staged guest (an exec of bash, a few ms, on its side).
mv "$stage/vmm-runtime" "$stage/vmm-runtime.bin"
printf '#!/bin/bash\nVMM_GUEST_DIR=%s exec %s "$@"\n' "$stage/guest" "$stage/vmm-runtime.bin" > "$stage/vmm-runtime"
chmod +x "$stage/vmm-runtime"
ip link set lo up
podman=(podman --root /tmp/pm/root --runroot /run/pm --storage-driver vfs --cgroup-manager cgroupfs
        --events-backend file)
image=$("${podman[@]}" load -q -i "$archive" | sed -n 's/^Loaded image: //p' | head -1)
runtimes=(vmm-runtime crun runc)
# One `podman run --rm IMAGE true`, its wall time in microseconds.
one() {
    local t0 t1
    t0=$(date +%s%N)
    "${podman[@]}" --runtime "$stage/$1" run --rm "$image" true > /dev/null 2> /tmp/bench-run.err ||
        { echo "bench-runtime: $1 failed:" >&2; cat /tmp/bench-run.err >&2; exit 1; }
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000))
}
for r in "${runtimes[@]}"; do one "$r" > /dev/null; done # warm-up: podman's and the page cache's
echo "round ${runtimes[*]}" > "$out/samples.txt"
for i in $(seq "$rounds"); do
    line=$i
    for r in "${runtimes[@]}"; do line+=" $(one "$r")"; done
    echo "$line" | tee -a "$out/samples.txt" >&2
done
python3 - "$out/samples.txt" <<'PY' | tee "$out/report.md"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
names, samples = rows[0][1:], [[int(x) / 1000 for x in r[1:]] for r in rows[1:]]
cols = {n: [s[i] for s in samples] for i, n in enumerate(names)}
base = statistics.median(cols["crun"])
print(f"podman run --rm IMAGE true, {len(samples)} rounds interleaved, virtual time (ms)\n")
print("| runtime | median | min | max | median / crun's |")
print("|---|---|---|---|---|")
for n in names:
    c = cols[n]
    print(f"| {n} | {statistics.median(c):.1f} | {min(c):.1f} | {max(c):.1f} | {statistics.median(c) / base:.2f} |")
PY
