#!/bin/busybox sh
# PID 1 of the nested host ("L1") that scripts/nested.sh boots under QEMU TCG.
# Loads KVM on AMD-V and the modules for the shares, mounts the machine's
# files (9p, read-only) under an overlay whose writes go to a tmpfs, and runs
# the command nested.sh wrote in its control directory inside that root, with
# stdout on ttyS1 and stderr on ttyS2. Its exit status goes to the control
# directory; what goes wrong before that is said on the console (ttyS0) as a
# line "vmm-nested: STATUS: REASON", which nested.sh turns into its exit code.
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

say() { echo "vmm-nested: $*" > /dev/console; }
stop() { sync; reboot -f; sleep 60; }
fail() { say "$1: $2"; stop; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
ctl=$VMM_NESTED_CTL

while read -r m; do
    insmod "/lib/modules/$m" 2>/tmp/insmod.err || fail l1-failed "insmod $m: $(cat /tmp/insmod.err)"
done < /lib/modules/order

if ! grep -qw svm /proc/cpuinfo; then
    fail kvm-failed "the L1's CPU has no svm flag (QEMU must run it with -cpu max under TCG)"
fi
if [ ! -d /sys/module/kvm_amd ] || [ ! -c /dev/kvm ]; then
    fail kvm-failed "kvm_amd did not load or /dev/kvm is missing: $(dmesg | grep -iE 'kvm|svm' | tail -n 5 | tr '\n' ' ')"
fi

mkdir -p /mnt/lower /mnt/rw
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot /mnt/lower ||
    fail l1-failed "cannot mount the machine's files (9p tag hostroot)"
mount -t tmpfs -o mode=0755 tmpfs /mnt/rw
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work,xino=off /newroot ||
    fail l1-failed "cannot mount the overlay: $(dmesg | tail -n 3 | tr '\n' ' ')"
r=/newroot
mount -t proc proc $r/proc
mount -t sysfs sysfs $r/sys
mount -t devtmpfs devtmpfs $r/dev
mkdir -p $r/dev/pts $r/dev/shm $r/sys/fs/cgroup
mount -t devpts devpts $r/dev/pts
mount -t tmpfs tmpfs $r/dev/shm
mount -t tmpfs tmpfs $r/run
mount -t cgroup2 cgroup2 $r/sys/fs/cgroup
mkdir -p "$r$ctl"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 ctl "$r$ctl" ||
    fail l1-failed "cannot mount the control directory (9p tag ctl)"
if [ -f "$r$ctl/results" ]; then
    results=$(cat "$r$ctl/results")
    mkdir -p "$r$results"
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results "$r$results" ||
        fail l1-failed "cannot mount the results directory (9p tag results)"
    # The heartbeat (nested.sh --heartbeat): the L1's uptime, rewritten
    # every few seconds of its clock whatever the command does, so that the
    # caller can tell an L1 that lives from one that froze.
    if [ -f "$r$ctl/heartbeat" ]; then
        every=$(cat "$r$ctl/heartbeat")
        (while :; do cat /proc/uptime > "$r$results/l1.heartbeat"; sleep "$every"; done) &
    fi
fi

# The command's output ports carry bytes as they are: no newline translation.
# The command writes to pipes, as under a caller that captures its output
# (not to the serial ports themselves, which are terminals); the copies end,
# and the ports drain, when the command and what it left running close them.
stty -F /dev/ttyS1 raw -echo
stty -F /dev/ttyS2 raw -echo
mkfifo /tmp/stdout /tmp/stderr
cat /tmp/stdout > /dev/ttyS1 &
out=$!
cat /tmp/stderr > /dev/ttyS2 &
err=$!
say ready
chroot $r /bin/bash "$ctl/run.sh" < /dev/null > /tmp/stdout 2> /tmp/stderr
echo $? > "$r$ctl/status"
wait $out $err
stop
