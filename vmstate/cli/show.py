"""``vmstate show FILE``: a saved file as a decoded tree (or as JSON)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmstate.errors import DecodeError
    from vmstate.inputs import StreamInput
    from vmstate.render import Labels
    from vmstate.saved_file import SavedFile
    from vmstate.stream import Input, Resolver, Section


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Decode every section of a file written by vmstate save (or any stream "
        "with a vmdesc, bare or in a libvirt save image), using the shipped description "
        "of each section when there is one."
    )
    p.add_argument("file", metavar="FILE", help="a saved file or stream; - or a pipe too")
    p.add_argument(
        "--json", action="store_true", help="one JSON object: every section and its state"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vmstate.errors import DecodeError
    from vmstate.inputs import open_stream
    from vmstate.saved_file import read_file

    with open_stream(args.file) as opened:
        try:
            saved = read_file(opened.data)
        except DecodeError as error:
            sections = _stream_sections(opened.data, error)
        else:
            sections = _saved_sections(saved)
        if args.json:
            _print_json(opened, sections)
        else:
            _print_text(opened, sections)
    return 0


#: one section as shown: its framing, then (title, description, state) parts
Shown = tuple["Section", list[tuple[str, Any, dict[str, Any] | None]]]


def _saved_sections(saved: SavedFile) -> list[Shown]:
    """A saved file's sections: decoded trees, the vfio section's groups unframed."""
    from vmstate import pci_vfio, registry

    qemu = registry.get(pci_vfio.QEMU_DESCRIPTION_NAME)
    out: list[Shown] = []
    for section in saved.stream.sections:
        if section.state is not None:
            out.append((section, [("", section.description, section.state)]))
        elif saved.data is not None and section == saved.data.section:
            payload, data = saved.data.payload, saved.data
            parts: list[tuple[str, Any, dict[str, Any] | None]] = []
            if payload.config is not None and payload.config_state is not None:
                start, end = payload.config
                title = f"DEV_CONFIG_STATE: {qemu.name}, {end - start} bytes"
                parts.append((title, qemu, payload.config_state))
            chunks = _count(len(payload.chunks), "chunk")
            title = f"DEV_DATA_STATE: {chunks}, {payload.data_size} bytes of device data"
            parts.append((title, None, None))
            if data.decoded is not None and data.format is not None:
                parts.append((f"device data as {data.format.name}:", data.format, data.decoded))
            out.append((section, parts))
        elif saved.qemu_config is not None:  # QEMU's VFIOPCIDevice state on its own
            out.append((section, [("", qemu, saved.qemu_config)]))
    return out


def _stream_sections(buf: Input, error: DecodeError) -> list[Shown]:
    """Any other stream with a vmdesc; *error* is why it is no saved file, raised when
    it looks like one after all."""
    from vmstate import pci_vfio
    from vmstate.errors import DecodeError
    from vmstate.progress import TerminalProgress
    from vmstate.stream import parse

    try:
        with TerminalProgress("reading the stream") as progress:
            parsed = parse(buf, _resolver(buf), progress=progress)
    except DecodeError:
        raise error from None
    if any(s.idstr.endswith(f"/{pci_vfio.DESCRIPTION_NAME}") for s in parsed.sections):
        raise error
    return [(s, [("", s.description, s.state)]) for s in parsed.device_sections()]


def _resolver(buf: Input) -> Resolver | None:
    """The stream's own vmdesc when it has one (it says exactly what was written);
    else the shipped description each section names."""
    from vmstate import registry
    from vmstate.stream import find_vmdesc, resolver_from

    if find_vmdesc(buf) is not None:
        return None
    return resolver_from({name: registry.get(name) for name in registry.names()})


def _print_text(opened: StreamInput, sections: list[Shown]) -> None:
    from vmstate import pci_vfio
    from vmstate.pci.decode import decode_config
    from vmstate.pci.render import render_text
    from vmstate.render import render_tree

    path = opened.name
    if opened.save_image is not None:
        print(f"{path}: {opened.save_image.summary()}")
    size = len(opened.data)
    print(f"{path}: QEMU-format stream, {size} bytes, {_count(len(sections), 'section')}")
    for section, parts in sections:
        length = section.end - section.start
        first = parts[0][1]
        if parts[0][0] or first is None:
            print(f"\n{section.idstr}: QEMU vfio section, {length} bytes")
        else:
            print(f"\n{section.idstr}: {first.name} v{section.version_id}, {length} bytes")
        for title, desc, state in parts:
            indent = "  "
            if title:
                print(f"  {title}")
                indent = "    "
            if desc is None or state is None:
                continue
            if desc.name == pci_vfio.DESCRIPTION_NAME:
                config = state["config"] + state.get("extended_config", b"")
                sizes = {i: b["size"] for i, b in enumerate(state["bars"]) if b["size"]}
                for line in render_text(decode_config(config, sizes)).splitlines():
                    print(f"{indent}| {line}")
            for line in render_tree(desc, state, indent, _labels(desc.name, state)):
                print(line)


def _print_json(opened: StreamInput, sections: list[Shown]) -> None:
    import json

    out: dict[str, Any] = {"file": opened.name, "size": len(opened.data)}
    if opened.save_image is not None:
        image = opened.save_image
        out["libvirt_save_image"] = {"summary": image.summary(), "stream_offset": image.stream_offset}
    out["sections"] = [
        {
            "idstr": section.idstr,
            "section_id": section.section_id,
            "instance_id": section.instance_id,
            "version_id": section.version_id,
            "offset": section.start,
            "size": section.end - section.start,
            "parts": [
                {
                    **({"title": title.rstrip(":")} if title else {}),
                    **({"description": desc.name} if desc is not None else {}),
                    **({"state": desc.to_json(state)} if desc is not None and state else {}),
                }
                for title, desc, state in parts
            ],
        }
        for section, parts in sections
    ]
    print(json.dumps(out, indent=2))


def _labels(description: str, state: Mapping[str, Any]) -> Labels:
    """How show names the values of the shipped descriptions' coded fields: PCI IDs as
    QEMU and lspci print them (four hex digits), BAR kinds, protocols and the device's
    migration flags (which the protocol in *state* defines) by name."""
    from vmstate import pci_vfio, saved_file

    ids: dict[str, Callable[[Any], str]] = {
        "vendor_id": _hex(4),
        "device_id": _hex(4),
        "subsystem_vendor_id": _hex(4),
        "subsystem_id": _hex(4),
        "class_code": _hex(6),
    }
    if description == pci_vfio.DESCRIPTION_NAME:
        kinds = {
            pci_vfio.KIND_NONE: "unused",
            pci_vfio.KIND_IO: "I/O",
            pci_vfio.KIND_MEM32: "32-bit memory",
            pci_vfio.KIND_MEM64: "64-bit memory",
            pci_vfio.KIND_UPPER: "upper half of a 64-bit BAR",
        }
        return {**ids, "kind": _named(kinds)}
    if description == saved_file.META_NAME:
        protocols = {
            saved_file.PROTOCOL_REGIONS: "device state regions (2019 patch)",
            saved_file.PROTOCOL_V2: "VFIO migration v2",
        }
        flags = _migration_flags(state.get("protocol"))
        return {"protocol": _named(protocols), "flags": _flag_names(flags)}
    return {}


def _migration_flags(protocol: int | None) -> dict[int, str]:
    """The names of a saved device's migration flags under *protocol* (the VFIO
    constants only: showing a file loads no VFIO bindings)."""
    from vmstate import saved_file

    if protocol == saved_file.PROTOCOL_V2:
        from vmstate._lowlevel import vfio

        return {
            vfio.VFIO_MIGRATION_STOP_COPY: "STOP_COPY",
            vfio.VFIO_MIGRATION_P2P: "P2P",
            vfio.VFIO_MIGRATION_PRE_COPY: "PRE_COPY",
        }
    if protocol == saved_file.PROTOCOL_REGIONS:
        from vmstate import region_protocol

        return {
            region_protocol.CAP_DEVICE_MEMORY: "DEVICE_MEMORY",
            region_protocol.CAP_SYSTEM_MEMORY: "SYSTEM_MEMORY",
        }
    return {}


def _flag_names(names: dict[int, str]) -> Callable[[Any], str]:
    """``0x5 (STOP_COPY|PRE_COPY)``: each set bit by its name, unknown bits in hex."""

    def label(value: Any) -> str:
        known = [name for bit, name in sorted(names.items()) if value & bit]
        rest = value & ~sum(names)
        parts = known + ([f"{rest:#x}"] if rest else [])
        return f"{value:#x} ({'|'.join(parts) or 'none'})"

    return label


def _hex(digits: int) -> Callable[[Any], str]:
    return lambda value: f"0x{value:0{digits}x}"


def _named(names: dict[int, str]) -> Callable[[Any], str]:
    return lambda value: f"{value} ({names.get(value, 'unknown')})"


def _count(n: int, noun: str) -> str:
    from vmstate.render import count

    return count(n, noun)
