#!/usr/bin/env bash
# Runs COMMAND on a nested host: a machine ("L1") that QEMU's software
# emulator (TCG, -cpu max) runs with AMD-V and nested paging, where Debian's
# kernel loads kvm_amd, so /dev/kvm there is the real hardware-virtualization
# path of KVM, whatever this machine's own /dev/kvm is.
#
#   scripts/nested.sh [--smp N] [--memory SIZE] [--icount] [--results DIR]
#                     [--timeout SECS] [--console FILE] [--monitor SOCKET]
#                     [--heartbeat SECS] -- COMMAND [ARGS...]
#
# This machine's files are the L1's, at the same paths, read-only under an
# overlay whose writes are thrown away at the end: a nested run never changes
# them. --results DIR (made if missing) is shared writable instead, for files
# to come back. COMMAND runs from the repository root with this shell's
# environment; its stdout and stderr come back on this script's.
# --monitor SOCKET puts QEMU's human monitor on that Unix socket (`info
# registers` there shows where the L1's CPU is, when it seems stuck).
# --heartbeat SECS (needs --results) has the L1's init write its uptime to
# RESULTS/l1.heartbeat every SECS seconds of its own clock, beside COMMAND
# and whatever it does: a caller tells an L1 that lives (the heartbeat goes
# on) from one that froze (it stops).
#
# Exit code: COMMAND's, or
#   2    bad options
#   124  --timeout passed before COMMAND ended
#   125  the L1 could not be prepared or did not boot (reason on stderr)
#   126  the L1 booted but KVM did not come up there (kvm_amd, /dev/kvm)
#
# --icount runs the L1 with `-icount shift=0,sleep=off`: one virtual
# nanosecond per instruction, time frozen while nothing runs, so the times
# measured inside are deterministic; it needs --smp 1.
set -euo pipefail

usage() {
    sed -n '7,9p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
    exit 2
}
bad() { echo "nested: $*" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
smp=1
memory=2G
icount=0
results=
timeout=0
console=
monitor=()
heartbeat=
while (($#)); do
    case $1 in
        --smp) [[ ${2:-} =~ ^[1-8]$ ]] || bad "--smp takes 1 to 8, not '${2:-}'"; smp=$2; shift 2 ;;
        --memory) [[ ${2:-} =~ ^[1-9][0-9]*[MG]$ ]] || bad "--memory takes a size such as 2G or 1536M, not '${2:-}'"; memory=$2; shift 2 ;;
        --icount) icount=1; shift ;;
        --results) [[ -n ${2:-} ]] || bad "--results takes a directory"; results=$2; shift 2 ;;
        --timeout) [[ ${2:-} =~ ^[0-9]+$ ]] || bad "--timeout takes seconds, not '${2:-}'"; timeout=$2; shift 2 ;;
        --console) [[ -n ${2:-} ]] || bad "--console takes a file"; console=$2; shift 2 ;;
        --monitor) [[ -n ${2:-} && ${2:-} != *,* ]] || bad "--monitor takes a socket path without commas"; monitor=(-monitor "unix:$2,server=on,wait=off"); shift 2 ;;
        --heartbeat) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || bad "--heartbeat takes seconds (1 or more), not '${2:-}'"; heartbeat=$2; shift 2 ;;
        --) shift; break ;;
        -h | --help) usage ;;
        *) bad "unknown option '$1' (the command goes after --)" ;;
    esac
done
(($#)) || bad "no command: scripts/nested.sh [options] -- COMMAND [ARGS...]"
((icount == 0 || smp == 1)) || bad "--icount needs --smp 1 (an icount L1 with two CPUs does not reach its init)"
[[ -z $heartbeat || -n $results ]] || bad "--heartbeat needs --results (the heartbeat is written there)"

fail() { echo "nested: $*" >&2; exit 125; }
command -v qemu-system-x86_64 >/dev/null ||
    fail "qemu-system-x86_64 is missing: apt-get install qemu-system-x86 (scripts/setup.sh does)"
l1=$("$repo/scripts/nested/build-l1.sh" | sed -n 's/^L1_DIR=//p') || exit 125
[[ -n $l1 ]] || exit 125

ctl=$(mktemp -d /tmp/vmm-nested.XXXXXX)
trap 'rm -rf "$ctl"' EXIT
# The command, with this shell's environment, from the repository root.
{
    export -p | grep -vE '^declare -x (PWD|OLDPWD|SHLVL|_)='
    printf 'cd %q || exit 127\n' "$repo"
    printf 'exec'
    printf ' %q' "$@"
    echo
} > "$ctl/run.sh"
share=(-fsdev "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap"
       -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
       -fsdev "local,id=ctl,path=$ctl,security_model=none"
       -device virtio-9p-pci,fsdev=ctl,mount_tag=ctl)
if [[ -n $results ]]; then
    mkdir -p "$results"
    results=$(cd "$results" && pwd)
    printf '%s' "$results" > "$ctl/results"
    [[ -z $heartbeat ]] || printf '%s' "$heartbeat" > "$ctl/heartbeat"
    share+=(-fsdev "local,id=results,path=$results,security_model=none"
            -device virtio-9p-pci,fsdev=results,mount_tag=results)
fi
accel=tcg
if ((icount)); then
    clock=(-icount shift=0,sleep=off)
else
    clock=()
    ((smp == 1)) || accel=tcg,thread=multi
fi
# Output ports: ttyS1 is the command's stdout, ttyS2 its stderr. QEMU
# writes them into FIFOs that cat copies to this script's own stdout and
# stderr, so they land as any child's output would (QEMU reopening the
# caller's file would write at its own offset, over the caller's).
out=$ctl/stdout
err=$ctl/stderr
mkfifo "$out" "$err"
cat "$out" &
out_copy=$!
cat "$err" >&2 &
err_copy=$!
qemu=(qemu-system-x86_64 -accel "$accel" -cpu max -smp "$smp" -m "$memory" -M pc
      -nodefaults -no-user-config -display none -no-reboot
      -kernel "$l1/vmlinuz" -initrd "$l1/initramfs.cpio"
      -append "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off VMM_NESTED_CTL=$ctl"
      -chardev "file,id=con,path=$ctl/console.log" -serial chardev:con
      -chardev "file,id=out,path=$out" -serial chardev:out
      -chardev "file,id=err,path=$err" -serial chardev:err
      "${share[@]}" "${clock[@]}" "${monitor[@]}")
rc=0
if ((timeout)); then
    # --foreground: QEMU stays in this script's process group, so that a
    # caller who kills the group (the nested tests' watchdog) stops it too.
    timeout --foreground --kill-after=10 "$timeout" "${qemu[@]}" 2>"$ctl/qemu.log" || rc=$?
else
    "${qemu[@]}" 2>"$ctl/qemu.log" || rc=$?
fi
# QEMU has closed the FIFOs (or never opened them): the copies end.
for pair in "$out_copy:$out" "$err_copy:$err"; do
    # A copy still waiting for a writer (QEMU never started) gets one.
    [[ -e /proc/${pair%%:*} ]] && timeout 2 bash -c ': > "$1"' _ "${pair#*:}" 2>/dev/null
done
wait "$out_copy" "$err_copy" 2>/dev/null || true
[[ -n $console ]] && cp "$ctl/console.log" "$console"
if [[ -f $ctl/status ]]; then
    exit "$(cat "$ctl/status")"
fi
if ((rc == 124 || rc == 137)) && ((timeout)); then
    echo "nested: the command did not end within $timeout s" >&2
    exit 124
fi
reason=$(grep -a '^vmm-nested: ' "$ctl/console.log" | grep -v ': ready$' | tail -n 1 || true)
case $reason in
    "vmm-nested: kvm-failed: "*) echo "nested: ${reason#vmm-nested: kvm-failed: }" >&2; exit 126 ;;
    "vmm-nested: l1-failed: "*) fail "${reason#vmm-nested: l1-failed: }" ;;
esac
{
    echo "nested: the L1 ended without running the command to its end (QEMU exit $rc)"
    sed 's/^/  qemu: /' "$ctl/qemu.log"
    tail -n 20 "$ctl/console.log" | sed 's/^/  console: /'
} >&2
exit 125
