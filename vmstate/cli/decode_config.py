"""``vmstate decode-config FILE|BDF``: a config space decoded, like lspci -vv but as data too."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vmstate import pci_device_state
from vmstate.errors import UsageError
from vmstate.inputs import STDIN, open_stream
from vmstate.pci.decode import decode_config
from vmstate.pci.render import render_text
from vmstate.pci_host import normalize_bdf, open_device
from vmstate.stream import MAGIC


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "decode-config",
        help="decode a PCI config space: header, BARs, capabilities",
        description="Decode the config space of a device (BDF), of a raw config file "
        "(64, 256 or 4096 bytes), or saved in a vmstate file.",
    )
    p.add_argument("source", metavar="FILE|BDF")
    p.add_argument("--json", action="store_true", help="print the decoded config as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config, sizes = _config(args.source)
    space = decode_config(config, sizes)
    if args.json:
        print(json.dumps(space.to_json(), indent=2))
    else:
        print(render_text(space), end="")
    return 0


def _config(source: str) -> tuple[bytes, dict[int, int] | None]:
    bdf = normalize_bdf(source)
    path = Path(source)
    if bdf is not None and not path.exists():
        device, _ = open_device(bdf)
        with device:
            return pci_device_state.read_config(device), pci_device_state.bar_sizes(device)
    if source != STDIN and not path.exists():
        raise UsageError(f"{source}: neither a file nor a PCI address")
    with open_stream(path) as opened:
        buf = opened.data
        if bytes(buf[:4]) == MAGIC.to_bytes(4, "big"):
            section = pci_device_state.find_section(buf)
            assert section.state is not None
            state = section.state
            return state["config"] + state.get("extended_config", b""), _saved_sizes(state)
        return bytes(buf), None


def _saved_sizes(state: dict[str, Any]) -> dict[int, int]:
    sizes = {i: bar["size"] for i, bar in enumerate(state["bars"]) if bar["size"]}
    if state.get("rom", {}).get("size"):
        sizes[6] = state["rom"]["size"]
    return sizes
