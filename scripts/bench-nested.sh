#!/usr/bin/env bash
# `vmm bench` inside the nested AMD-V host, every system's files staged on
# the L1's tmpfs first, as a real host has them in its page cache: the VMM
# and the bench, the default guest's vmlinux and initramfs (through
# VMM_GUEST_DIR), runc, unshare and busybox; the template and the bundle
# are made in the bench's own directory there. Run it in an icount L1:
#
#   cargo build --release --workspace
#   scripts/nested.sh --icount --smp 1 --results /tmp/br --timeout 1100 -- \
#       scripts/bench-nested.sh /tmp/br --iterations 10 --warmup 1 --limit 60
#
# The report, samples and chart come back in RESULTS (the first argument);
# the other arguments go to `vmm bench` after the systems
# (vmm,vmm-restore,runc,unshare) and --out.
set -euo pipefail
out=${1:?usage: bench-nested.sh RESULTS_DIR [vmm bench options]}
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
stage=/tmp/stage
mkdir -p "$stage/guest"
cp "$here/target/release/vmm" "$here/target/release/vmm-bench" "$stage/"
guest=${VMM_GUEST_DIR:-${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}/current}
cp -L "$guest/vmlinux" "$guest/initramfs.cpio" "$stage/guest/"
cp "$(command -v runc)" "$(command -v unshare)" "$(command -v busybox)" "$stage/"
export VMM_GUEST_DIR=$stage/guest PATH=$stage:$PATH
"$stage/vmm" bench --systems vmm,vmm-restore,runc,unshare --out /tmp/bench-out "$@"
cp -r /tmp/bench-out/. "$out/"
