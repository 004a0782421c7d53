#!/usr/bin/env bash
# The test command: installs what is missing, builds the default guest
# (cached outside the repository), checks formatting and lints, and runs
# every test: unit, tiny-guest KVM tests, the end-to-end Linux boots on this
# machine's KVM and on the nested AMD-V host (scripts/nested.sh, whose boot
# files are cached outside the repository like the guest kernel);
# then each fuzz target for a bounded time ($FUZZ_SECONDS, 30 by default).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
[[ -f $HOME/.cargo/env ]] && . "$HOME/.cargo/env"
guest-kernels/build.sh
scripts/nested/build-l1.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --quiet
cargo test --workspace -- --test-threads=2
scripts/fuzz.sh
