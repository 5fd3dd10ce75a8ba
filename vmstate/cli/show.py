"""``vmstate show FILE``: a saved file as a decoded tree."""

from __future__ import annotations

import argparse
from typing import Any

from vmstate import pci_device_state, registry
from vmstate.analyze import open_stream
from vmstate.pci_vfio import decode_config
from vmstate.render import render_tree
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
    with open_stream(args.file) as buf:
        parsed = parse(buf, _resolver(buf))
        print(
            f"{args.file}: QEMU-format stream, {parsed.size} bytes, {len(parsed.device_sections())} sections"
        )
        for section in parsed.device_sections():
            _show(section)
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
        for line in decode_config(config, sizes).render_text().splitlines():
            print(f"  | {line}")
    for line in render_tree(desc, state, "  "):
        print(line)
