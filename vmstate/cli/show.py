"""``vmstate show FILE``: a saved file as a decoded tree."""

from __future__ import annotations

import argparse
from typing import Any

from vmstate import pci_device_state, registry, vfio_state
from vmstate.inputs import open_stream
from vmstate.pci.decode import decode_config
from vmstate.pci.render import render_text
from vmstate.render import render_tree
from vmstate.stream import (
    Input,
    Resolver,
    Section,
    find_vmdesc,
    parse,
    resolver_from,
)


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
        parsed = parse(buf, _resolver(buf), raw=vfio_state.raw_sections)
        if opened.save_image is not None:
            print(f"{path}: {opened.save_image.summary()}")
        print(f"{path}: QEMU-format stream, {parsed.size} bytes, {len(parsed.sections)} sections")
        saved = None
        for section in parsed.sections:
            if section.state is not None:
                _show(section)
            elif section.idstr.endswith("/vfio"):
                if saved is None:
                    saved = vfio_state.read_file(buf)
                _show_vfio(section, buf, saved)
    return 0


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
    if desc.name == pci_device_state.DESCRIPTION_NAME:
        config = state["config"] + state.get("extended_config", b"")
        sizes = {i: b["size"] for i, b in enumerate(state["bars"]) if b["size"]}
        for line in render_text(decode_config(config, sizes)).splitlines():
            print(f"  | {line}")
    for line in render_tree(desc, state, "  "):
        print(line)


def _show_vfio(section: Section, buf: Input, saved: vfio_state.SavedFile) -> None:
    payload = vfio_state.walk_vfio(buf, section.start)
    print(f"\n{section.idstr}: QEMU vfio section, {section.end - section.start} bytes")
    state = vfio_state.config_state(buf, payload)
    if payload.config is not None and state is not None:
        start, end = payload.config
        qemu = registry.get(pci_device_state.QEMU_DESCRIPTION_NAME)
        print(f"  DEV_CONFIG_STATE: {qemu.name}, {end - start} bytes")
        for line in render_tree(qemu, state, "    "):
            print(line)
    print(
        f"  DEV_DATA_STATE: {len(payload.chunks)} chunks, {payload.data_size} bytes of device data"
    )
    if saved.data is not None and saved.data_format is not None:
        print(f"  device data as {saved.data_format.name}:")
        for line in render_tree(saved.data_format, saved.data, "    "):
            print(line)
