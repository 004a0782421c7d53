#!/usr/bin/env bash
# The OCI runtime's end-to-end scenarios, run on the nested AMD-V host by
# tests/tests/nested.rs (each container a VM there):
#   runtime_scenarios.sh life   RUNTIME LAYOUT:TAG OUT   the life cycle on
#       bundles made by `umoci unpack`; the states it prints go to OUT
#   runtime_scenarios.sh podman RUNTIME ARCHIVE IMAGE    podman run/stop/-t/-p
#   runtime_scenarios.sh ctr    RUNTIME ARCHIVE IMAGE    containerd's ctr run
# Each step prints a line the tests look for ("key: value", "rc=N").
set -u
mode=$1 rt=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
G=(--root /run/vmm-rt-test)
R() { "$rt" "${G[@]}" "$@"; }
status() { R state "$1" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null || echo none; }
# Waits (up to 120 s) until container $1's status is $2.
wait_status() { for _ in $(seq 600); do [ "$(status "$1")" = "$2" ] && return 0; sleep 0.2; done; return 1; }
# Waits (up to 120 s) until file $1 holds $2.
wait_for() { for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done; return 1; }

life() {
    local layout=$1 out=$2 w=/tmp/rt-life
    export VMM_RUNTIME_CACHE=/tmp/rt-life-cache
    rm -rf $w $VMM_RUNTIME_CACHE; mkdir -p $w "$out"
    umoci unpack --image "$layout" $w/base > /dev/null || { echo "umoci unpack failed"; exit 90; }
    # mk NAME ARGS_JSON [TERMINAL]: a bundle of the image running ARGS.
    mk() {
        cp -a $w/base $w/$1
        python3 - "$w/$1/config.json" "$2" "${3:-false}" <<'PY'
import json, sys
path, args, terminal = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "true"
c = json.load(open(path))
c["process"]["args"] = args
c["process"]["terminal"] = terminal
json.dump(c, open(path, "w"))
PY
    }
    echo "== life cycle"
    mk life '["sh", "-c", "trap \"echo got-TERM; exit 42\" TERM; echo ready; while :; do sleep 0.1; done"]'
    R create --bundle $w/life --pid-file $w/life.pid life > $w/life.out 2> $w/life.err
    echo "create rc=$?"
    R state life > "$out/state-created.json"
    echo "status after create: $(status life)"
    [ "$(cat $w/life.pid)" = "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$out/state-created.json")" ] &&
        [ -d /proc/$(cat $w/life.pid) ] && echo "pid file: the live VMM's"
    R create --bundle $w/life life 2> $w/exists.err; echo "create again rc=$?"
    R start life; echo "start rc=$?"
    R state life > "$out/state-running.json"
    echo "status after start: $(status life)"
    R start life 2> $w/start2.err; echo "start again rc=$?"
    wait_for $w/life.out '^ready' && echo "the process runs"
    R delete life 2> $w/del.err; echo "delete running rc=$?"
    R list | grep -q '^life .* running' && echo "list: life running"
    R ps --format json life | python3 -c 'import json,sys; print("ps:", len(json.load(sys.stdin)), "pid")'
    R pause life; echo "pause rc=$?; status: $(status life)"
    R resume life; echo "resume rc=$?; status: $(status life)"
    R kill life TERM; echo "kill TERM rc=$?"
    wait_status life stopped && echo "status after TERM: stopped"
    R state life > "$out/state-stopped.json"
    grep -q '^got-TERM' $w/life.out && echo "the trap ran"
    R kill life TERM 2> /dev/null; echo "kill stopped rc=$?"
    R delete life; echo "delete rc=$?"
    R state life 2> /dev/null; echo "state after delete rc=$?"
    cat $w/exists.err $w/start2.err $w/del.err >&2

    echo "== exit status"
    mk three '["sh", "-c", "echo out-three; exit 3"]'
    R run --bundle $w/three three > $w/three.out; echo "run rc=$?"
    tr -d '\r' < $w/three.out
    mk trap '["sh", "-c", "trap \"echo got-TERM; exit 42\" TERM; echo ready; while :; do sleep 0.1; done"]'
    R run --bundle $w/trap trap > $w/trap.out & pid=$!
    wait_for $w/trap.out '^ready' && R kill trap TERM
    wait $pid; echo "TERM with a trap rc=$?"
    mk killed '["sh", "-c", "trap \"\" TERM; echo ready; while :; do sleep 0.1; done"]'
    R run --bundle $w/killed killed > $w/killed.out & pid=$!
    wait_for $w/killed.out '^ready' && R kill killed KILL; echo "kill KILL rc=$?"
    wait $pid; echo "KILL rc=$?"

    echo "== two at once"
    mk a '["sh", "-c", "echo I am a; sleep 1; exit 10"]'
    mk b '["sh", "-c", "echo I am b; sleep 1; exit 11"]'
    R run --bundle $w/a a > $w/a.out & pa=$!
    R run --bundle $w/b b > $w/b.out & pb=$!
    wait $pa; ra=$?; wait $pb; rb=$?
    echo "a rc=$ra: $(tr -d '\r' < $w/a.out)"
    echo "b rc=$rb: $(tr -d '\r' < $w/b.out)"

    echo "== console socket"
    mk tty '["sh", "-c", "test -t 0 && echo on-a-terminal; echo type-now; read line; echo typed-$line; exit 0"]' true
    python3 "$here/console_socket.py" $w/console.sock type-now 'hello
' 120 > $w/tty.out 2> $w/tty.err & cpid=$!
    for _ in $(seq 100); do [ -S $w/console.sock ] && break; sleep 0.1; done
    R create --bundle $w/tty --console-socket $w/console.sock tty; echo "create rc=$?"
    R start tty; echo "start rc=$?"
    wait_status tty stopped
    wait $cpid
    cat $w/tty.err
    tr -d '\r' < $w/tty.out
    R delete tty
    mk notty '["true"]' true
    R create --bundle $w/notty notty 2> $w/notty.err; echo "terminal without a socket rc=$?"
    cat $w/notty.err

    echo "== left behind"
    echo "containers left: $(R list -q | wc -l)"; R list >&2
    # Every bundle had the same root: one disk made, the others overlays.
    echo "cached disks: $(ls $VMM_RUNTIME_CACHE | wc -l)"
    rm -rf $w
}

podman_cmd() {
    echo podman --root /tmp/pm/root --runroot /run/pm --storage-driver vfs --cgroup-manager cgroupfs \
        --events-backend file --runtime "$rt"
}

podman_scenario() {
    local archive=$1 image=$2 P
    P=$(podman_cmd)
    ip link set lo up
    $P load -i "$archive" > /dev/null 2>&1 || { echo "podman load failed"; exit 90; }
    echo "== exit"
    $P run --rm "$image" sh -c 'echo in-a-vm $(uname -r); exit 3'; echo "run rc=$?"
    echo "== detach and stop"
    $P run -d --name d1 "$image" sh -c 'trap "echo got-TERM; exit 0" TERM; echo started; while :; do sleep 0.1; done' > /dev/null
    echo "run -d rc=$?"
    for _ in $(seq 600); do $P logs d1 2>/dev/null | grep -q started && break; sleep 0.2; done
    echo "ps: $($P ps --format '{{.Names}} {{.State}}' | grep d1)"
    echo "inspect: $($P inspect d1 --format '{{.State.Status}}')"
    $P stop -t 60 d1 > /dev/null; echo "stop rc=$?"
    echo "inspect: $($P inspect d1 --format '{{.State.Status}} exit={{.State.ExitCode}}')"
    echo "logs: $($P logs d1 | tr -d '\r' | tr '\n' ' ')"
    $P rm d1 > /dev/null; echo "rm rc=$?"
    echo "ps -a: $($P ps -a -q | wc -l) containers"
    echo "== terminal"
    script -qfec "$P run --rm -t $image sh -c 'test -t 0 && echo on-a-terminal; exit 4'" /tmp/pm-tty.log > /dev/null
    echo "run -t rc=$?"
    tr -d '\r' < /tmp/pm-tty.log | grep -a on-a-terminal
    echo "== port"
    $P run -d --name web -p 8080:80 -u 0 "$image" sh -c \
        'mkdir -p /www; echo hello-from-the-vm > /www/index.html; exec httpd -f -p 80 -h /www' > /dev/null
    echo "run -p rc=$?"
    python3 - <<'PY'
import time, urllib.request
for _ in range(60):
    try:
        body = urllib.request.urlopen("http://127.0.0.1:8080/", timeout=10).read().decode().strip()
        print("http: " + body)
        break
    except Exception as e:
        last = e
        time.sleep(1)
else:
    print("http: failed: %s" % last)
PY
    $P rm -f web > /dev/null; echo "rm -f rc=$?"
}

ctr_scenario() {
    local archive=$1 image=$2 d=/tmp/ctrd C
    rm -rf $d /run/ctrd; mkdir -p $d /run/ctrd
    cat > $d/config.toml <<EOC
version = 2
root = "$d/root"
state = "/run/ctrd/state"
[grpc]
  address = "/run/ctrd/ctrd.sock"
EOC
    containerd --config $d/config.toml > $d/log 2>&1 & cd_pid=$!
    for _ in $(seq 300); do [ -S /run/ctrd/ctrd.sock ] && break; sleep 0.2; done
    C="ctr -a /run/ctrd/ctrd.sock"
    $C images import --snapshotter native "$archive" > /dev/null || { echo "ctr import failed"; exit 90; }
    echo "== ctr run"
    $C run --snapshotter native --runc-binary "$rt" --rm "$image" c1 \
        sh -c 'echo from-containerd-in-a-vm; exit 6' | tr -d '\r'
    echo "ctr run rc=${PIPESTATUS[0]}"
    kill $cd_pid; wait $cd_pid 2> /dev/null
}

case $mode in
    life) life "$3" "$4" ;;
    podman) podman_scenario "$3" "$4" ;;
    ctr) ctr_scenario "$3" "$4" ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
