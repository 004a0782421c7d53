#!/usr/bin/env bash
# The main job: builds everything it needs (packages, the default guest
# kernel, the VMM) and boots the default guest, serial console on stdio.
# Extra arguments go to `vmm run` (e.g. --vcpus 2 --memory 256M).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
[[ -f $HOME/.cargo/env ]] && . "$HOME/.cargo/env"
guest-kernels/build.sh >/dev/null
cargo build --release --quiet -p vmm-cli
exec target/release/vmm run "$@"
