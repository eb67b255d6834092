#!/bin/busybox sh
# Init of the test guest.  Kernel command line parameters:
#   wl.tag=TAG        virtio-fs tag to mount on /mnt (default: share)
#   wl.run=A,B,C      run "/bin/workload A B C" once the share is mounted
#   wl.ctl=TTY        then run "workload hold" reading commands from /dev/TTY
#   wl.fio=A,B,C      meanwhile run "fio A B C" (initrd-clients.img) over and
#   wl.stress=A,B,C   over, and "stress-ng A B C" likewise, in the background,
#   wl.stop=FILE      until FILE exists (without wl.stop: once each)
#   wl.idle=FILE      at the end, with the share still mounted and nothing
#                     running, print "GUEST IDLE" and wait until FILE exists
#                     (at most 600 s): the host checks the daemon at rest
# Every stage prints a "GUEST ..." line on the console for the host to read;
# the guest powers off at the end (run QEMU with -no-reboot).  Each client
# prints "GUEST FIO run=<n> rc=<rc> errors=<e>" per run (its error lines
# before as "GUEST FIO| ...", its summary as "GUEST FIO: ..."), then
# "GUEST FIO END runs=<n> errors=<e>";
# STRESS likewise.  An error is a fio line reporting a verify failure or
# an I/O error, a stress-ng "fail:" or "error:" line or failed/skipped
# stressor (versions that print the tally), or a
# non-zero exit status of a run that reported none of these.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp

tag=share
run=
ctl=
fio=
stress=
stop=
idle=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    wl.tag=*) tag=${arg#wl.tag=} ;;
    wl.run=*) run=$(echo "${arg#wl.run=}" | tr ',' ' ') ;;
    wl.ctl=*) ctl=${arg#wl.ctl=} ;;
    wl.fio=*) fio=$(echo "${arg#wl.fio=}" | tr ',' ' ') ;;
    wl.stress=*) stress=$(echo "${arg#wl.stress=}" | tr ',' ' ') ;;
    wl.stop=*) stop=${arg#wl.stop=} ;;
    wl.idle=*) idle=${arg#wl.idle=} ;;
    esac
done

# Count the errors in one client run's log ($1: FIO or STRESS, $2: log)
client_errors() {
    if [ "$1" = FIO ]; then
        grep -E '^verify: |verify failed|[Bb]ad (magic|header)|io_u error|err= *[1-9]|fio: .*error' "$2"
    else
        grep -E ' (fail|error): |^stress-ng: .* (failed|skipped): [1-9]' "$2"
    fi > "$2.err"
    n=$(wc -l < "$2.err")
    sed -n "1,20s/^/GUEST $1| /p" "$2.err"
    echo "$n"
}
# Run a client until the stop file exists: $1 FIO or STRESS, then argv
client_loop() {
    name=$1
    shift
    runs=0
    errors=0
    while :; do
        runs=$((runs + 1))
        log=/tmp/$name.$runs.log
        "$@" > "$log" 2>&1
        rc=$?
        e=$(client_errors "$name" "$log" | tee /tmp/$name.out | tail -n 1)
        grep "^GUEST $name| " /tmp/$name.out
        [ "$rc" != 0 ] && [ "$e" = 0 ] && e=1 && tail -n 5 "$log" | sed "s/^/GUEST $name| /"
        errors=$((errors + e))
        # What the run did: fio's throughput lines, stress-ng's tally
        case $name in
        FIO) grep -E '^ *(READ|WRITE): ' "$log" ;;
        *) grep -E ' metrc: \[[0-9]+\] [a-z]+ +[0-9]+ +[0-9.]+ |run completed' "$log" ;;
        esac | sed "s/^ */GUEST $name: /"
        echo "GUEST $name run=$runs rc=$rc errors=$e"
        rm -f "$log" "$log.err"
        if [ -z "$stop" ] || [ -e "$stop" ]; then
            break
        fi
    done
    echo "GUEST $name END runs=$runs errors=$errors"
}
echo "GUEST BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)"

for m in $(cat /lib/modules/order); do
    insmod "/lib/modules/$m.ko" || echo "GUEST INSMOD $m failed"
done

rc=0
if mount -t virtiofs "$tag" /mnt; then
    echo "GUEST MOUNT ok tag=$tag uptime=$(cut -d' ' -f1 /proc/uptime)"
    clients=
    if [ -n "$fio" ]; then
        # shellcheck disable=SC2086
        client_loop FIO /usr/bin/fio $fio &
        clients="$clients $!"
    fi
    if [ -n "$stress" ]; then
        # shellcheck disable=SC2086
        client_loop STRESS /usr/bin/stress-ng $stress &
        clients="$clients $!"
    fi
    if [ -n "$run" ]; then
        # shellcheck disable=SC2086
        /bin/workload $run
        rc=$?
        echo "GUEST RUN rc=$rc"
    fi
    if [ -n "$ctl" ]; then
        stty -F "/dev/$ctl" raw -echo 2>/dev/null
        echo "GUEST CTL ready dev=$ctl"
        /bin/workload hold --dir /mnt < "/dev/$ctl"
        echo "GUEST CTL rc=$?"
    fi
    for pid in $clients; do
        wait "$pid"
    done
    if [ -n "$idle" ]; then
        echo "GUEST IDLE"
        i=0
        while [ ! -e "$idle" ] && [ $i -lt 6000 ]; do
            sleep 0.1
            i=$((i + 1))
        done
    fi
    cd /
    umount /mnt || echo "GUEST UMOUNT failed"
else
    echo "GUEST MOUNT err tag=$tag"
    rc=1
fi
echo "GUEST DONE rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
