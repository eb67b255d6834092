#!/bin/busybox sh
# Init of the test guest.  Kernel command line parameters:
#   wl.tag=TAG        virtio-fs tag to mount on /mnt (default: share)
#   wl.run=A,B,C      run "/bin/workload A B C" once the share is mounted
#   wl.ctl=TTY        then run "workload hold" reading commands from /dev/TTY
# Every stage prints a "GUEST ..." line on the console for the host to read;
# the guest powers off at the end (run QEMU with -no-reboot).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp

tag=share
run=
ctl=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    wl.tag=*) tag=${arg#wl.tag=} ;;
    wl.run=*) run=$(echo "${arg#wl.run=}" | tr ',' ' ') ;;
    wl.ctl=*) ctl=${arg#wl.ctl=} ;;
    esac
done
echo "GUEST BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)"

for m in $(cat /lib/modules/order); do
    insmod "/lib/modules/$m.ko" || echo "GUEST INSMOD $m failed"
done

rc=0
if mount -t virtiofs "$tag" /mnt; then
    echo "GUEST MOUNT ok tag=$tag uptime=$(cut -d' ' -f1 /proc/uptime)"
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
    cd /
    umount /mnt || echo "GUEST UMOUNT failed"
else
    echo "GUEST MOUNT err tag=$tag"
    rc=1
fi
echo "GUEST DONE rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
