#!/bin/busybox sh
# /init of the VFIO test guest; tests/vm/harness.py builds the initramfs around it.
# Loads the modules named in /modules.list (dependencies first), mounts the host's
# root read-only and the host's result directory read-write over 9p, binds QEMU's
# test devices to vfio-pci, creates two mtty mediated devices, then runs the
# host-written run.sh chrooted into the host root and powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

say() { echo "vmstate-guest: $* (uptime $(cut -d' ' -f1 /proc/uptime)s)"; }
halt() { sync; poweroff -f; }

say "init started"
while read -r ko; do
    insmod "/lib/modules/$ko" || say "insmod $ko failed"
done < /modules.list

# The host root is read-only; /run gets a tmpfs that holds the result share's
# mount point and the tests' HOME and TMPDIR (the harness keeps the checkout and
# the interpreter out of /run, /proc, /sys and /dev).
G=/host/run/vmstate
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host \
    || { say "cannot mount the host root"; halt; }
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mount -t tmpfs run /host/run
mkdir -p "$G/results" "$G/home" "$G/tmp"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results "$G/results" \
    || { say "cannot mount the result share"; halt; }

# QEMU's edu, pci-testdev, e1000e and ivshmem-plain, each in its own IOMMU group.
for d in /sys/bus/pci/devices/*; do
    id="$(cat "$d/vendor"):$(cat "$d/device")"
    case $id in
        0x1234:0x11e8 | 0x1b36:0x0005 | 0x8086:0x10d3 | 0x1af4:0x1110) ;;
        *) continue ;;
    esac
    bdf=${d##*/}
    echo vfio-pci > "$d/driver_override"
    [ -e "$d/driver" ] && echo "$bdf" > "$d/driver/unbind"
    echo "$bdf" > /sys/bus/pci/drivers_probe
    say "$bdf $id -> $(basename "$(readlink "$d/driver")") group $(basename "$(readlink "$d/iommu_group")")"
done

# Two dual-port mtty devices: a migration source and a destination.
t=/sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2
for u in 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001 83b8f4f2-509f-382f-3c1e-e6bfe0fa1002; do
    echo "$u" > "$t/create" && say "mdev $u group $(basename "$(readlink "/sys/bus/mdev/devices/$u/iommu_group")")"
done

say "running the tests"
chroot /host /bin/sh /run/vmstate/results/run.sh
rc=$?
echo "$rc" > "$G/results/exit-status"
say "tests exited with status $rc"
umount "$G/results"
halt
