"""Device mixes of the test guests, shared by tests/data/qemu/make_data.py and the
real-migration tests: one "-option value" per string (see migration.split).

NIC option ROMs are off (``romfile=``) so iPXE neither grows the stream nor makes
the NIC state depend on DHCP timing.  Every guest also gets the harness's
isa-debugcon (no migration state) and QMP socket.
"""

from __future__ import annotations

PC_2_0_DEVICES = [
    "-netdev user,id=n0,restrict=on",
    "-device e1000,netdev=n0,romfile=,addr=0x2",
    "-netdev user,id=n1,restrict=on",
    "-device virtio-net-pci,netdev=n1,romfile=,addr=0x3",
    "-device i6300esb,addr=0x4",
]
PC_STORAGE_USB = [
    "-device VGA,vgamem_mb=1,addr=0x2",
    "-netdev user,id=n0,restrict=on",
    "-device e1000,netdev=n0,romfile=,addr=0x3",
    "-device piix3-usb-uhci,id=uhci,addr=0x4",
    "-device usb-tablet,bus=uhci.0",
    "-device usb-ehci,id=ehci,addr=0x5",
    "-device usb-kbd,bus=ehci.0",
    "-audiodev none,id=snd0",
    "-device intel-hda,id=hda,addr=0x6",
    "-device hda-duplex,bus=hda.0,audiodev=snd0",
    "-drive if=none,id=cd0,media=cdrom",
    "-device ide-cd,drive=cd0,bus=ide.1,unit=0",
    "-device floppy,unit=0",
    "-drive if=none,id=d1,file=null-co://,format=raw,read-only=on",
    "-device virtio-blk-pci,drive=d1,addr=0x7",
    "-drive if=none,id=d2,file=null-co://,format=raw,read-only=on",
    "-device lsi53c895a,id=lsi,addr=0x8",
    "-device scsi-hd,drive=d2,bus=lsi.0",
]
# The ICH9 AHCI is built in; a drive on it costs 30 s of SeaBIOS timeouts under TCG.
Q35_STORAGE_USB = [
    "-netdev user,id=n0,restrict=on",
    "-device e1000e,netdev=n0,romfile=,addr=0x2",
    "-netdev user,id=n1,restrict=on",
    "-device virtio-net-pci,netdev=n1,romfile=,addr=0x3",
    "-drive if=none,id=d1,file=null-co://,format=raw,read-only=on",
    "-device virtio-scsi-pci,id=scsi0,addr=0x4",
    "-device scsi-hd,drive=d1,bus=scsi0.0",
    "-drive if=none,id=d2,file=null-co://,format=raw,read-only=on",
    "-device virtio-blk-pci,drive=d2,addr=0x5",
    "-device qemu-xhci,id=xhci,addr=0x6",
    "-device usb-kbd,bus=xhci.0",
    "-device usb-ehci,id=ehci,addr=0x7",
    "-device usb-tablet,bus=ehci.0",
    "-device pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x8",
    "-device virtio-rng-pci,bus=rp1",
    "-drive if=none,id=d3,file=null-co://,format=raw,read-only=on",
    "-device megasas-gen2,id=sas,addr=0x9",
    "-device scsi-hd,drive=d3,bus=sas.0",
]
#: the same with one user-mode network: QEMU 10.0 numbers its slirp sections 0, 1...,
#: 7.2 gives every one instance 0, so a second -netdev user cannot migrate 10.0 -> 7.2
Q35_STORAGE_USB_ONE_NETDEV = [o for o in Q35_STORAGE_USB if "n1" not in o]
Q35_SMALL = [
    "-netdev user,id=n0,restrict=on",
    "-device e1000e,netdev=n0,romfile=,addr=0x2",
    "-drive if=none,id=d1,file=null-co://,format=raw,read-only=on",
    "-device virtio-blk-pci,drive=d1,addr=0x3",
]
