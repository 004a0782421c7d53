#!/usr/bin/env bash
# Fork density: N clones of one template running at once (`vmm run --from`,
# each with its own private memory, copy-on-write disk overlay and TAP)
# against N cold-booted VMs of the same guest (each with its own TAP and
# its own sparse copy of the disk), for each N given. For each it prints the
# host memory the N VMMs use together once every guest has answered: their
# proportional set sizes summed (/proc/PID/smaps_rollup: pages shared by
# several processes, as the template's memory file is, count once over
# all), and the drop in MemAvailable from before the N started.
#
# Needs root (TAPs), /dev/kvm and the guest's user space (not kvm_pvm).
# On the nested AMD-V host, with the files staged on the L1's tmpfs:
#
#   cargo build --release -p vmm-cli
#   scripts/nested.sh --smp 2 --memory 8G --timeout 3000 -- bash scripts/density.sh 1 10 50
#
# Options (before the counts): --memory SIZE (each guest's, 128M).
set -euo pipefail
mem=128M
if [[ ${1:-} == --memory ]]; then
    mem=${2:?--memory takes a size}
    shift 2
fi
counts=("$@")
((${#counts[@]})) || counts=(1 10 50)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=/tmp/density
rm -rf "$work"
mkdir -p "$work/guest"
# The VMM and the guest on tmpfs, as a host has them in its page cache.
cp "$here/target/release/vmm" "$work/"
guest=${VMM_GUEST_DIR:-${VMM_GUEST_CACHE:-$HOME/.cache/vmm-guest}/current}
cp -L "$guest/vmlinux" "$guest/initramfs.cpio" "$guest/init" "$work/guest/"
export VMM_GUEST_DIR=$work/guest
vmm=$work/vmm
max=0
for n in "${counts[@]}"; do ((n > max)) && max=$n; done
for ((i = 0; i < max; i++)); do
    ip tuntap add dev "dtap$i" mode tap 2>/dev/null || true
    ip link set "dtap$i" up
done
truncate -s 64M "$work/disk.ext4"
mkfs.ext4 -q -F "$work/disk.ext4"
"$vmm" template create "$work/tpl" --memory "$mem" --disk "$work/disk.ext4" \
    --net tap=dtap0 --log-level warn
echo "template: $(du -k "$work/tpl/vm.mem" | cut -f1) KiB of memory file on tmpfs"

avail() { awk '/^MemAvailable:/ {print $2}' /proc/meminfo; }
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

# measure KIND N: starts N VMs of KIND (clone or cold), one after another,
# each once the one before answered "up"; with all N running, prints the
# figures; ends them.
measure() {
    local kind=$1 n=$2 i pids=() before after total=0 deadline
    sync
    before=$(avail)
    deadline=$((SECONDS + 1800))
    # One after another, each once the one before has answered: all N run
    # at once in the end, and no start waits behind fifty others.
    for ((i = 0; i < n; i++)); do
        local cmd=(sh -c 'echo up; exec sleep 100000')
        if [[ $kind == clone ]]; then
            "$vmm" run --from "$work/tpl" --net "tap=dtap$i" --log-level warn -- "${cmd[@]}" \
                > "$work/out.$i" 2>&1 &
        else
            cp --sparse=always "$work/disk.ext4" "$work/cold-$i.ext4"
            "$vmm" run --memory "$mem" --disk "$work/cold-$i.ext4" --net "tap=dtap$i" \
                --log-level warn -- "${cmd[@]}" > "$work/out.$i" 2>&1 &
        fi
        pids+=($!)
        until grep -q '^up' "$work/out.$i" 2>/dev/null; do
            if ((SECONDS > deadline)) || ! kill -0 "${pids[i]}" 2>/dev/null; then
                echo "density: $kind $i did not answer:" >&2
                cat "$work/out.$i" >&2
                kill "${pids[@]}" 2>/dev/null || true
                wait || true
                return 1
            fi
            sleep 0.1
        done
        if (((i + 1) % 10 == 0)); then
            echo "density: $kind N=$n: $((i + 1)) up after $SECONDS s, MemAvailable $(($(avail) / 1024)) MiB" >&2
        fi
    done
    sleep 2
    for p in "${pids[@]}"; do total=$((total + $(pss "$p"))); done
    after=$(avail)
    kill "${pids[@]}" 2>/dev/null || true
    wait || true
    rm -f "$work"/cold-*.ext4 "$work"/out.*
    awk -v k="$kind" -v n="$n" -v t="$total" -v d="$((before - after))" 'BEGIN {
        printf "density: %-5s N=%-3d PSS summed %7.1f MiB (%6.1f MiB a VM), MemAvailable down %7.1f MiB (%6.1f MiB a VM)\n",
            k, n, t / 1024, t / 1024 / n, d / 1024, d / 1024 / n }'
}

for n in "${counts[@]}"; do
    measure clone "$n"
    measure cold "$n"
done
rm -rf "$work"
