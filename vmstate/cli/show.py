"""``vmstate show FILE``: a saved file as a decoded tree."""

from __future__ import annotations

import argparse
from typing import Any

from vmstate import pci_device_state, registry
from vmstate.analyze import open_stream
from vmstate.description import Description
from vmstate.pci_vfio import decode_config
from vmstate.render import render_tree
from vmstate.stream import Input, Resolver, Section, find_vmdesc, parse, parse_vmdesc, resolver_from
from vmstate.vmdesc import resolver_from_vmdesc


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


def _resolver(buf: Input) -> Resolver:
    """Shipped descriptions where a section names one; the stream's vmdesc for the rest."""
    shipped = resolver_from({name: registry.get(name) for name in registry.names()})
    at = find_vmdesc(buf)
    vmdesc = resolver_from_vmdesc(parse_vmdesc(buf, at)) if at is not None else None

    def resolve(idstr: str, instance_id: int, version_id: int) -> Description | None:
        found = shipped(idstr, instance_id, version_id)
        if found is None and vmdesc is not None:
            found = vmdesc(idstr, instance_id, version_id)
        return found

    return resolve


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
