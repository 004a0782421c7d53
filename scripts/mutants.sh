#!/usr/bin/env bash
# Mutation testing with cargo-mutants: every mutant of the virtio device
# models (devices/src/virtio/, against the devices crate's unit tests) and
# of the container image unpacker (vmm/image/src/unpack.rs, against
# vmm-image's), in a sandbox.
#
#   scripts/mutants.sh [--out DIR] [--jobs N] [virtio|unpack]...
#
# Results (caught, missed, timeout, unviable lists and logs) go to
# DIR/virtio and DIR/unpack (default /tmp/vmm-mutants); --jobs N builds and
# tests N mutants at once (default 1). Needs root.
#
# The sandbox: a mutant of the unpacker can write or remove outside the
# image's root (one that split paths at every byte but '/' once removed
# this machine's /etc), so everything runs in a mount namespace of its own
# where the root file system is read-only, and only /tmp (the copies cargo-
# mutants builds and tests, the tests' scratch) and $CARGO_HOME stay
# writable. The script checks that /etc cannot be written before it starts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -f $HOME/.cargo/env ]] && . "$HOME/.cargo/env"

out=/tmp/vmm-mutants
jobs=1
sets=()
while (($#)); do
    case $1 in
        --out) [[ -n ${2:-} ]] || { echo "mutants: --out takes a directory" >&2; exit 2; }; out=$2; shift 2 ;;
        --jobs) [[ ${2:-} =~ ^[1-9][0-9]?$ ]] || { echo "mutants: --jobs takes 1 to 99" >&2; exit 2; }; jobs=$2; shift 2 ;;
        virtio | unpack) sets+=("$1"); shift ;;
        -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "mutants: unknown argument '$1' (virtio, unpack, --out DIR, --jobs N)" >&2; exit 2 ;;
    esac
done
((${#sets[@]})) || sets=(virtio unpack)
[[ $out == /tmp/* ]] || { echo "mutants: --out must be under /tmp, the sandbox's one writable place" >&2; exit 2; }

if [[ ${VMM_MUTANTS_SANDBOX:-} != 1 ]]; then
    [[ $(id -u) -eq 0 ]] || { echo "mutants: needs root (for its mount namespace)" >&2; exit 1; }
    if ! cargo mutants --version >/dev/null 2>&1; then
        echo "mutants: installing cargo-mutants" >&2
        cargo install --quiet --locked cargo-mutants >&2
    fi
    exec unshare --mount --propagation private env VMM_MUTANTS_SANDBOX=1 "$0" --out "$out" --jobs "$jobs" "${sets[@]}"
fi

cargo_home=${CARGO_HOME:-$HOME/.cargo}
for dir in /tmp "$cargo_home"; do
    mount --bind "$dir" "$dir"
done
mount -o remount,bind,ro /
if touch /etc/.vmm-mutants-probe 2>/dev/null; then
    rm -f /etc/.vmm-mutants-probe
    echo "mutants: the sandbox failed: /etc is writable" >&2
    exit 1
fi

mkdir -p "$out"
status=0
for set in "${sets[@]}"; do
    case $set in
        virtio) args=(-f 'devices/src/virtio/**/*.rs' -e devices/src/virtio/testing.rs --test-package devices) ;;
        unpack) args=(-f vmm/image/src/unpack.rs --test-package vmm-image) ;;
    esac
    # Without debug info the many incremental builds are quicker.
    CARGO_PROFILE_DEV_DEBUG=0 cargo mutants "${args[@]}" --jobs "$jobs" -o "$out/$set" || status=$?
done
exit "$status"
