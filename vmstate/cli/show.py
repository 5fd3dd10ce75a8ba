"""``vmstate show FILE``: a saved file as a decoded tree."""

from __future__ import annotations

import argparse
from typing import Any

from vmstate import pci_vfio, registry
from vmstate.errors import DecodeError
from vmstate.inputs import open_stream
from vmstate.pci.decode import decode_config
from vmstate.pci.render import render_text
from vmstate.render import render_tree
from vmstate.saved_file import SavedFile, read_file
from vmstate.stream import Input, Resolver, Section, find_vmdesc, parse, resolver_from


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "show",
        help="show a saved state file as a decoded tree",
        description="Decode every section of a file written by vmstate save (or any stream "
        "with a vmdesc), using the shipped description of each section when there is one.",
    )
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return show_file(args.file)


def show_file(path: str) -> int:
    """Print every section of *path*: decoded trees, and vfio sections unframed."""
    with open_stream(path) as opened:
        buf = opened.data
        if opened.save_image is not None:
            print(f"{path}: {opened.save_image.summary()}")
        try:
            saved = read_file(buf)
        except DecodeError as error:
            _show_stream(path, buf, error)
            return 0
        _show_saved(path, saved)
    return 0


def _show_saved(path: str, saved: SavedFile) -> None:
    parsed = saved.stream
    print(f"{path}: QEMU-format stream, {parsed.size} bytes, {len(parsed.sections)} sections")
    for section in parsed.sections:
        if section.state is not None:
            _show(section)
        elif saved.data is not None and section == saved.data.section:
            _show_vfio(saved)
        elif saved.qemu_config is not None:  # QEMU's VFIOPCIDevice state on its own
            qemu = registry.get(pci_vfio.QEMU_DESCRIPTION_NAME)
            print(f"\n{section.idstr}: {qemu.name}, {section.end - section.start} bytes")
            for line in render_tree(qemu, saved.qemu_config, "  "):
                print(line)


def _show_stream(path: str, buf: Input, error: DecodeError) -> None:
    """Any other stream with a vmdesc; *error* is why it is no saved file, raised when
    it looks like one after all."""
    try:
        parsed = parse(buf, _resolver(buf))
    except DecodeError:
        raise error from None
    if any(s.idstr.endswith(f"/{pci_vfio.DESCRIPTION_NAME}") for s in parsed.sections):
        raise error
    print(f"{path}: QEMU-format stream, {parsed.size} bytes, {len(parsed.sections)} sections")
    for section in parsed.device_sections():
        _show(section)


def _resolver(buf: Input) -> Resolver | None:
    """The stream's own vmdesc when it has one (it says exactly what was written);
    else the shipped description each section names."""
    if find_vmdesc(buf) is not None:
        return None
    return resolver_from({name: registry.get(name) for name in registry.names()})


def _show(section: Section) -> None:
    assert section.description is not None and section.state is not None
    desc, state = section.description, section.state
    print(
        f"\n{section.idstr}: {desc.name} v{section.version_id}, {section.end - section.start} bytes"
    )
    if desc.name == pci_vfio.DESCRIPTION_NAME:
        config = state["config"] + state.get("extended_config", b"")
        sizes = {i: b["size"] for i, b in enumerate(state["bars"]) if b["size"]}
        for line in render_text(decode_config(config, sizes)).splitlines():
            print(f"  | {line}")
    for line in render_tree(desc, state, "  "):
        print(line)


def _show_vfio(saved: SavedFile) -> None:
    assert saved.data is not None
    section, payload = saved.data.section, saved.data.payload
    print(f"\n{section.idstr}: QEMU vfio section, {section.end - section.start} bytes")
    if payload.config is not None and payload.config_state is not None:
        start, end = payload.config
        qemu = registry.get(pci_vfio.QEMU_DESCRIPTION_NAME)
        print(f"  DEV_CONFIG_STATE: {qemu.name}, {end - start} bytes")
        for line in render_tree(qemu, payload.config_state, "    "):
            print(line)
    print(
        f"  DEV_DATA_STATE: {len(payload.chunks)} chunks, {payload.data_size} bytes of device data"
    )
    if saved.data.decoded is not None and saved.data.format is not None:
        print(f"  device data as {saved.data.format.name}:")
        for line in render_tree(saved.data.format, saved.data.decoded, "    "):
            print(line)
