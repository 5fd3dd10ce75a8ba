"""Targets for what describes one device: saved device files (read, planned against
an emulated device and loaded into it), PCI config spaces (decoded, rendered as lspci
does, masks, compatibility) and ``lspci -x`` text."""

from __future__ import annotations

import functools
import json
import random

from fuzz import corpus
from fuzz import formats as X
from fuzz import generate as G
from fuzz.checks import located, require
from vmstate.errors import VMStateError
from vmstate.pci.registers import CONFIG_SIZES


@functools.cache
def _layout(label: str) -> tuple[list[tuple[int, int]], int | None, tuple[int, int]]:
    """A saved file's section spans, its vmdesc offset, and where its config bytes are."""
    from vmstate.saved_file import read_file

    data = dict(corpus.saved_files())[label]
    saved = read_file(data)
    spans = [(s.header_offset, s.end) for s in saved.stream.sections]
    config = saved.config
    at = data.index(bytes(config.state["config"]), config.section.start)
    return spans, saved.stream.vmdesc_offset, (at, len(config.state["config"]))


def saved_file(rng: random.Random) -> None:
    """A saved device file changed in its framing, vfio chunks, config bytes or
    metadata; read, planned against an emulated device, and now and then loaded into
    it, where a load that fails must leave the device's config as it was."""
    from vmstate import pci_vfio
    from vmstate.device_load import apply, plan_load
    from vmstate.saved_file import read_file
    from vmstate.testing.pci import e1000e_like

    label, data = G.pick(rng, list(corpus.saved_files()))
    spans, vmdesc_at, (config_at, config_len) = _layout(label)
    for _ in range(rng.randint(1, 2)):
        op = rng.randrange(5)
        if op == 0:
            data = G.stream_mutation(rng, data, spans, vmdesc_at)
        elif op == 1:
            data = X.vfio_framing(rng, data)
        elif op == 2 and config_at + config_len <= len(data):  # the config space, in place
            config = X.config_space(rng, data[config_at : config_at + config_len])[:config_len]
            config += bytes(config_len - len(config))
            data = data[:config_at] + config + data[config_at + config_len :]
        else:
            data = X.mutate_bytes(rng, data, 0, vmdesc_at)
    try:
        saved = read_file(data)
    except VMStateError as e:
        located(e, len(data))
        return
    device = corpus.migratable("dst") if label == "data" else e1000e_like("cfg")
    try:
        plan = plan_load(device, saved)
    except VMStateError as e:
        located(e, len(data))
        return
    if not plan.accepted or rng.random() < 0.5:
        return
    before = pci_vfio.read_state(device)
    try:
        apply(device, plan)
    except VMStateError:
        require(pci_vfio.read_state(device) == before, "a failed load changed the config")


def pci_config(rng: random.Random) -> None:
    """A config space changed where its structure is: decoded (any config-sized bytes
    decode, what is malformed becomes a Problem), rendered as lspci does, as JSON, its
    QEMU masks, and checked against another."""
    from vmstate.pci.compat import check_compatible
    from vmstate.pci.decode import decode_config
    from vmstate.pci.masks import build_masks
    from vmstate.pci.model import PciAddress
    from vmstate.pci.render import render_text

    data = _config(rng)
    sizes = X.bar_sizes(rng)
    try:
        space = decode_config(data, sizes)
    except VMStateError as e:
        located(e, len(data))
        require(len(data) not in CONFIG_SIZES, f"{len(data)} bytes of config refused: {e}")
        return
    address = G.pick(rng, [None, PciAddress(0, 0, 3, 0), PciAddress(0xFFFF, 0xFF, 0x1F, 7)])
    render_text(space, address, irq=G.pick(rng, [None, 0, 11, 255, 2**31]))
    json.dumps(space.to_json())
    masks = build_masks(data, sizes)
    other = _config(rng)
    if len(other) in CONFIG_SIZES:
        check_compatible(data, other, masks if rng.random() < 0.5 else None,
                         src_bar_sizes=sizes, dst_bar_sizes=X.bar_sizes(rng))
        masks.mismatches(other, data)


def _config(rng: random.Random) -> bytes:
    _, base = G.pick(rng, list(corpus.configs()))
    if rng.random() < 0.05:
        return rng.randbytes(G.pick(rng, [64, 256, 4096]))
    return X.config_space(rng, base)


def lspci_text(rng: random.Random) -> None:
    """``lspci -x`` text of one or more functions, broken line by line, read as
    decode-config reads it; every function read decodes."""
    from vmstate.pci.decode import decode_config
    from vmstate.pci.inputs import from_bytes
    from vmstate.pci.render import render_text

    spaces = [_config(rng) if rng.random() < 0.3 else G.pick(rng, list(corpus.configs()))[1]
              for _ in range(rng.randint(1, 3))]
    raw = X.lspci_text(rng, spaces).encode("latin-1")
    try:
        found = from_bytes(raw, "fuzz")
    except VMStateError as e:
        located(e, len(raw))
        return
    for config in found:
        try:
            space = decode_config(config.data)
        except VMStateError as e:
            located(e, len(config.data))
            require(len(config.data) not in CONFIG_SIZES, f"a dumped function refused: {e}")
            continue
        render_text(space, config.address)

