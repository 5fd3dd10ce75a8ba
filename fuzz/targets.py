"""What the fuzzer feeds inputs to, and what it requires of the result.

A target makes one input from a ``random.Random`` and runs it through the library
(:mod:`fuzz.checks` says what every answer must be).  Targets also check the
invariants that hold whenever an input is accepted (what loads re-encodes the same
way, what a description file or a dump reads back is equal, a failed load leaves
the device as it was), since those are where wrong answers hide.  This module
holds the description-level targets and the registry; streams, devices and the
command line have modules of their own.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable
from typing import Any

from fuzz import corpus
from fuzz import generate as G
from fuzz.checks import InvariantError, located, require
from fuzz.cli_target import cli
from fuzz.device_targets import lspci_text, pci_config, saved_file
from fuzz.stream_targets import commands, fitted, libvirt_image, mapped_ram, ram, real_stream, use
from vmstate.errors import VMStateError
from vmstate.predicates import parse_condition

__all__ = ["TARGETS", "WEIGHTS", "InvariantError"]


# -- targets ------------------------------------------------------------------------


def interpreter(rng: random.Random) -> None:
    """A random description on random or saved-then-broken bytes, both paths."""
    desc = G.description(rng)
    version = rng.randint(desc.minimum_version_id, desc.version_id)
    if rng.random() < 0.5:
        data = rng.randbytes(rng.randint(0, 120))
    else:
        try:
            data = desc.save(G.state(rng, desc), version)
        except VMStateError:
            return
        if data and rng.random() < 0.8:
            broken = bytearray(data)
            broken[rng.randrange(len(broken))] = rng.randrange(256)
            data = bytes(broken[: rng.randint(0, len(broken))] if rng.random() < 0.3 else broken)
    try:
        state, end = desc.load_from(data, 0, version, checks=False)
    except VMStateError as e:
        located(e, len(data))
        try:
            desc.trace(data, 0, version)
        except VMStateError as again:
            require((type(again), again.path, again.offset) == (type(e), e.path, e.offset),
                    f"paths disagree: {e} / {again}")
            return
        raise InvariantError(f"only the fast path refused: {e}") from None
    span = desc.trace(data, 0, version)
    require(repr(span.value) == repr(state) and span.end == end, "paths decode differently")
    again = desc.save(state, version)
    reloaded = desc.load(again, version)
    # A subsection is loaded whenever it is sent, and saved only when its needed holds
    # (as in QEMU): one the input sent while needed says no comes back without it.
    subsections = {sub.name for d in desc.walk() for sub in d.subsections}
    require(_same_but_subsections(reloaded, state, subsections),
            "a loaded state re-encodes otherwise")
    require(desc.save(reloaded, version) == again, "a saved state re-encodes otherwise")
    require(repr(desc.from_json(json.loads(json.dumps(desc.to_json(state))))) == repr(state),
            "the JSON round trip changes the state")


def _same_but_subsections(got: Any, want: Any, subsections: set[str]) -> bool:
    """*got* is *want*, but for subsections (named in *subsections*) it may lack."""
    if isinstance(want, dict) and isinstance(got, dict):
        return set(got) <= set(want) and set(want) - set(got) <= subsections and all(
            _same_but_subsections(got[k], want[k], subsections) for k in got)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(
            _same_but_subsections(g, w, subsections) for g, w in zip(got, want, strict=True))
    return repr(got) == repr(want)


def description_file(rng: random.Random) -> None:
    """Description-file text: lint lists problems, a file that loads reads back equal."""
    from vmstate.description_file import (
        check_description_text,
        dump_description,
        load_description_text,
    )

    text = G.description_file(rng)
    problems = check_description_text(text, "fuzz.toml")
    try:
        desc = load_description_text(text, "fuzz.toml")
    except VMStateError:
        require(any(p.severity == "error" for p in problems), "refused without a lint error")
        return
    require(all(p.severity != "error" for p in problems), "loaded despite a lint error")
    require(load_description_text(dump_description(desc)) == desc, "dump does not read back")
    data = rng.randbytes(rng.randint(0, 64))
    try:
        desc.load(data)
    except VMStateError as e:
        located(e, len(data))


def condition(rng: random.Random) -> None:
    """A condition on values of every type a field can hold."""
    names = ["a", "b", "c"]
    try:
        cond = parse_condition(G.condition(rng, names))
    except VMStateError:
        return
    values = {n: G.pick(rng, [G.interesting_int(rng), b"\x01", [1, 2], {"x": 1}, 1.5,
                              float("nan"), True, 2]) for n in names if rng.random() < 0.9}

    class Scope:
        version_id = rng.randint(0, 5)

        def lookup(self, name: str) -> Any:
            return self.version_id if name == "version_id" else values[name]

        def has(self, name: str) -> bool:
            return name in values

    with contextlib.suppress(VMStateError):
        cond(Scope())


def vmdesc(rng: random.Random) -> None:
    """A stream of one section described by a generated vmdesc tree."""
    entry = G.vmdesc_entry(rng)
    entry.update(name="dev", instance_id=0)
    tree: Any = {"page_size": G.pick(rng, [4096, 4096, 0, 3, "x"]), "devices": [entry]}
    if rng.random() < 0.05:
        tree = G.pick(rng, [[], None, {"devices": {}}, {"devices": [1]}])
    data = G.one_section_stream(rng, rng.randbytes(rng.randint(0, 80)), tree,
                                version=entry.get("version", 1) if isinstance(entry.get("version"), int) else 1)
    use(data, rng)


def qemu_dump(rng: random.Random) -> None:
    """-dump-vmstate JSON of QEMU 7.2 or 10.0, a few device classes with nodes changed:
    what imports exports back equal, and compares with another QEMU's dump."""
    from vmstate.compat import compare
    from vmstate.qemu_dump import export_qemu_dump, parse_qemu_dump
    from vmstate.sources import dump_description_set

    tree = corpus.dump_subset(rng)
    for _ in range(rng.randint(0, 4)):
        G._mutate_json(rng, tree, 0)
    try:
        dump = parse_qemu_dump(tree, "fuzz.json")
    except VMStateError as e:
        located(e, 0)
        return
    require(export_qemu_dump(dump) == tree, "a dump exports back otherwise")
    mine = dump_description_set(dump, "fuzz.json")
    against = dump_description_set(parse_qemu_dump(corpus.dump_subset(rng, 12)), "other.json")
    compare(mine, against)
    compare(against, mine)


TARGETS: dict[str, Callable[[random.Random], None]] = {
    "interpreter": interpreter,
    "description_file": description_file,
    "condition": condition,
    "vmdesc": vmdesc,
    "real_stream": real_stream,
    "fitted": fitted,
    "commands": commands,
    "ram": ram,
    "mapped_ram": mapped_ram,
    "libvirt_image": libvirt_image,
    "qemu_dump": qemu_dump,
    "saved_file": saved_file,
    "pci_config": pci_config,
    "lspci_text": lspci_text,
    "cli": cli,
}
#: inputs of each target per 1000 (cheap targets more, slow ones fewer): a run's
#: inputs are split by these, so that 1,000,000 take well under an hour on 2 cores
WEIGHTS = {"interpreter": 150, "description_file": 80, "condition": 200, "vmdesc": 150,
           "real_stream": 60, "fitted": 10, "commands": 30, "ram": 40, "mapped_ram": 30,
           "libvirt_image": 30, "qemu_dump": 40, "saved_file": 60, "pci_config": 80,
           "lspci_text": 40, "cli": 10}
