"""Real inputs the fuzzer starts from, loaded once per process and made small.

Real QEMU streams (7.2 and 10.0, with and without vmdesc, postcopy-advised) are
compacted: their RAM pages are cut out (the block list stays), then each input
takes a *window* of a few device sections with the vmdesc entries of just those,
so one input parses in about a millisecond instead of thirty.  Besides them:
QEMU's ``-dump-vmstate`` trees, captured PCI config spaces, and saved device files
written by ``vmstate save`` from the emulated devices of :mod:`vmstate.testing`.
"""

from __future__ import annotations

import functools
import json
import random
import struct
import tempfile
from pathlib import Path
from typing import Any

import attrs

from vmstate import stream
from vmstate.errors import VMStateError
from vmstate.vmdesc import resolver_from_vmdesc

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
QEMU_DATA = [DATA / "qemu", DATA / "qemu-10.0"]
#: streams without vmdesc: the dump they are read with (their source QEMU's), and
#: their twin, the stream QEMU wrote after loading them (the same device sections,
#: with a vmdesc that finds their ends here without a search)
NOVMDESC = {
    "q35-10.0-novmdesc.mig": (DATA / "qemu-10.0" / "dump-pc-q35-10.0.json",
                              DATA / "qemu-10.0" / "q35-10.0-novmdesc-reloaded.mig"),
}
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")


@attrs.frozen
class Item:
    """One top-level item of a stream: bytes as they were, and the device section's
    vmdesc key (None for the configuration, commands and ram)."""

    data: bytes
    device: tuple[str, int] | None


@attrs.frozen
class RealStream:
    name: str
    head: bytes  # magic, version, and the configuration section
    items: tuple[Item, ...]
    vmdesc: dict[str, Any] | None = attrs.field(eq=False)
    #: the dump a stream without vmdesc is read with
    dump: Path | None = None


@attrs.frozen
class Window:
    """A compacted real stream with some of its device sections."""

    name: str
    data: bytes
    #: (start, end) of each device section's bytes in *data*, for mutations
    sections: tuple[tuple[int, int], ...]
    vmdesc_at: int | None
    dump: Path | None


def _compact(path: Path) -> RealStream | None:
    full = path.read_bytes()
    dump, twin = NOVMDESC.get(path.name, (None, None))
    try:
        if twin is None:
            parsed = stream.parse(full)
        else:
            twin_data = twin.read_bytes()
            vmdesc = stream.parse_vmdesc(twin_data, stream.find_vmdesc(twin_data) or 0)
            parsed = stream.parse(full, resolver_from_vmdesc(vmdesc))
    except VMStateError:
        return None
    spans: list[tuple[int, int, Item]] = []
    for c in parsed.commands:
        spans.append((c.offset, c.offset + 5 + len(c.data), Item(full[c.offset : c.offset + 5 + len(c.data)], None)))
    for s in parsed.sections:
        end = s.end + (5 if s.end < len(full) and full[s.end] == stream.FOOTER else 0)
        raw = full[s.header_offset : end]
        if s.idstr == "ram" and s.type != stream.SECTION_START:
            # a PART or END of pages: only its header, EOS and footer stay
            raw = full[s.header_offset : s.start] + _BE64.pack(0x10) + full[s.end : end]
        device = (s.idstr, s.instance_id) if s.state is not None else None
        spans.append((s.header_offset, end, Item(raw, device)))
    spans.sort(key=lambda span: span[0])
    first = spans[0][0] if spans else len(full)
    vmdesc = parsed.vmdesc
    return RealStream(path.name, full[:first], tuple(item for _, _, item in spans), vmdesc, dump)


@functools.cache
def real_streams() -> tuple[RealStream, ...]:
    """Every real .mig under tests/data that parses, compacted."""
    found = []
    for directory in QEMU_DATA:
        for path in sorted(directory.glob("*.mig")):
            compacted = _compact(path)
            if compacted is not None:
                found.append(compacted)
    return tuple(found)


def window(rng: random.Random, real: RealStream | None = None, most: int = 6) -> Window:
    """A real stream with a run of up to *most* device sections (sometimes all of them),
    everything else of it kept, and a vmdesc of just the sections kept."""
    if real is None:
        real = rng.choice(real_streams())
    devices = [i for i, item in enumerate(real.items) if item.device is not None]
    if rng.random() < 0.02 or len(devices) <= most:
        keep = set(devices)
    else:
        start = rng.randrange(len(devices) - most + 1)
        keep = set(devices[start : start + rng.randint(1, most)])
    out = bytearray(real.head)
    spans = []
    for i, item in enumerate(real.items):
        if item.device is None or i in keep:
            if item.device is not None:
                spans.append((len(out), len(out) + len(item.data)))
            out += item.data
    out.append(stream.EOF)
    vmdesc_at = None
    if real.vmdesc is not None:
        kept = {real.items[i].device for i in keep}
        tree = dict(real.vmdesc)
        tree["devices"] = [d for d in real.vmdesc.get("devices", [])
                           if (d.get("name"), d.get("instance_id")) in kept]
        body = json.dumps(tree, separators=(",", ":")).encode()
        vmdesc_at = len(out)
        out += bytes([stream.VMDESCRIPTION]) + _BE32.pack(len(body)) + body
    return Window(real.name, bytes(out), tuple(spans), vmdesc_at, real.dump)


# -- -dump-vmstate --------------------------------------------------------------------


@functools.cache
def dump_paths() -> tuple[Path, ...]:
    return tuple(sorted(p for d in QEMU_DATA for p in d.glob("dump-*.json")))


@functools.cache
def dump_tree(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes())  # type: ignore[no-any-return]


@functools.cache
def description_set(path: Path) -> Any:
    from vmstate.sources import load_description_set

    return load_description_set(path)


def dump_subset(rng: random.Random, most: int = 8) -> dict[str, Any]:
    """A real dump's machine entry and a few of its device classes (a deep copy)."""
    tree = dump_tree(rng.choice(dump_paths()))
    names = [k for k in tree if k != "vmschkmachine"]
    keep = rng.sample(names, rng.randint(1, most))
    return json.loads(json.dumps({"vmschkmachine": tree["vmschkmachine"],
                                  **{k: tree[k] for k in keep}}))


# -- PCI config spaces ----------------------------------------------------------------


@functools.cache
def configs() -> tuple[tuple[str, bytes], ...]:
    """Every captured config space (QEMU's devices, this host's, malformed ones)."""
    return tuple((p.stem, p.read_bytes()) for p in sorted((DATA / "pci").glob("*.bin")))


# -- saved device files -----------------------------------------------------------------


def migratable(name: str = "dst", size: int = 600) -> Any:
    """An emulated PCI function (e1000e-shaped) whose device data is an emulated
    migration-v2 device's: what ``vmstate save`` and ``load`` talk to."""
    from vmstate.testing.migratable import MigratablePci

    return MigratablePci(name, seed=7, size=size)


@functools.cache
def saved_files() -> tuple[tuple[str, bytes], ...]:
    """Files as ``vmstate save`` writes them: with device data in QEMU's vfio framing,
    config only, config with QEMU's VFIOPCIDevice section, and mtty device data."""
    from vmstate.device_save import save
    from vmstate.testing.pci import e1000e_like

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, device, qemu in [("data", migratable("src"), False),
                                    ("config", e1000e_like("cfg"), False),
                                    ("qemu", e1000e_like("cfg"), True)]:
            device.write(7, 0x10, struct.pack("<I", 0xFEBC0000))
            device.write(7, 0x04, struct.pack("<H", 0x0506))
            path = Path(tmp) / f"{label}.vms"
            save(device, path, qemu=qemu)
            out.append((label, path.read_bytes()))
    out.append(("mtty", _mtty_file()))
    return tuple(out)


def _mtty_file() -> bytes:
    """A saved file of an mtty device: its data described field by field."""
    import io

    from vmstate import pci_vfio, registry
    from vmstate.stream_writer import DeviceSection, StreamWriter
    from vmstate.testing.pci import e1000e_like
    from vmstate.vfio_section import DEV_DATA_STATE, DEV_SETUP_STATE, END_OF_STATE

    port = struct.pack("<8s16sBBB??xHBBBx", bytes([0x41, 5, 0xC1, 0x1B, 8, 0x60, 0, 0x5A]),
                       bytes(16), 0, 0, 0, False, False, 12, 0xC1, 16, 1)
    data = struct.pack("<QIIII", 0x7E9D09898C3E2C4E, 1, 0, 2, 0) + port * 2
    dev = e1000e_like("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001")
    out = io.BytesIO()
    writer = StreamWriter(out, "vmstate")
    writer.device(DeviceSection(f"{dev.name}/vfio-pci-config", pci_vfio.description(),
                              pci_vfio.read_state(dev)))
    end = END_OF_STATE.to_bytes(8, "big")

    def payload(f: Any) -> int:
        f.write(DEV_SETUP_STATE.to_bytes(8, "big") + end + DEV_DATA_STATE.to_bytes(8, "big")
                + len(data).to_bytes(8, "big") + data + end)
        return 40 + len(data)

    writer.raw(f"{dev.name}/vfio", 1, payload)
    fmt = b"mtty-migration-data"
    meta = {"protocol": 2, "flags": 7, "format_len": len(fmt), "format": fmt,
            "data_size": len(data), "dirty_pages": 0}
    writer.device(DeviceSection(f"{dev.name}/vfio-device-state", registry.get("vfio-device-state"),
                              meta))
    writer.finish()
    return out.getvalue()
