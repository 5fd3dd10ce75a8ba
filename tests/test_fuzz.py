"""The fuzzer (fuzz/) in the suite: every target for a few hundred inputs from a fresh
seed each run, so that CI covers new inputs every time instead of replaying the same
ones.  A failure message gives the seed and the command that replays the input:

    VMSTATE_FUZZ_SEED=S python3 -m pytest tests/test_fuzz.py     # the same run again
    python3 fuzz/run.py --seed S --replay TARGET:INDEX          # one input, shown

``python3 fuzz/run.py --inputs 1000000`` is the long run (README, fuzz/README.md).
Before the targets run, the corpus they start from is checked to be what it claims:
real inputs that the library reads without complaint, so a mutation of it is a
mutation of something valid, not of garbage that is refused at its first byte."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from conftest import FUZZ_SEED
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # fuzz/ is a top-level package of the checkout
    sys.path.insert(0, str(ROOT))

from fuzz import corpus  # noqa: E402
from fuzz import generate as G  # noqa: E402
from fuzz.run import plan, run_one  # noqa: E402
from fuzz.stream_targets import extract  # noqa: E402
from fuzz.targets import TARGETS  # noqa: E402
from vmstate import stream  # noqa: E402

SEED = FUZZ_SEED
#: inputs per target in one suite run: 1-5 s each here, 40 s in all (the long run is fuzz/run.py)
INPUTS = {
    "interpreter": 1600, "description_file": 600, "condition": 4000, "vmdesc": 3000,
    "real_stream": 600, "fitted": 40, "commands": 600, "ram": 600, "mapped_ram": 600,
    "libvirt_image": 600, "qemu_dump": 300, "saved_file": 600, "pci_config": 800,
    "lspci_text": 600, "cli": 120,
}


def test_every_target_runs_here() -> None:
    assert set(INPUTS) == set(TARGETS)


def test_hypothesis_draws_fresh_examples_even_under_ci() -> None:
    """Hypothesis's CI profile replays the same examples every run; ours does not, and
    no test asks for that again (its seed is this run's, printed in the header)."""
    assert not settings.default.derandomize
    asking = [p.name for p in Path(__file__).parent.glob("*.py")
              if "derandomize=True" in p.read_text() and p.name != "test_fuzz.py"]
    assert asking == []


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target(target: str) -> None:
    """Only vmstate errors, located and on one line, and every invariant kept."""
    failures = []
    for index in range(INPUTS[target]):
        outcome, details = run_one(SEED, target, index)
        if outcome != "ok":
            failures.append((index, outcome, details))
    if failures:
        index, outcome, details = failures[0]
        pytest.fail(
            f"{len(failures)} of {INPUTS[target]} {target} inputs failed (seed {SEED}); the "
            f"first ({outcome}) replays with: python3 fuzz/run.py --seed {SEED} --replay "
            f"{target}:{index} (this test: VMSTATE_FUZZ_SEED={SEED})\n{details}",
            pytrace=False,
        )


# -- the corpus is real and valid ------------------------------------------------------


def test_real_streams_are_all_there_and_read_whole() -> None:
    """Compacted whole (every device section, RAM pages cut), each real stream reads;
    the one without vmdesc with the descriptions of its twin's."""
    from vmstate import stream
    from vmstate.vmdesc import resolver_from_vmdesc

    found = {r.name: r for r in corpus.real_streams()}
    expected = {p.name for d in corpus.QEMU_DATA for p in d.glob("*.mig")}
    # machine types up to 2.3 send no footers: without vmdesc nothing frames a section
    assert set(found) == expected - {"pc-2.0-e1000-watchdog-novmdesc.mig"}
    rng = random.Random(SEED)
    for real in found.values():
        devices = sum(item.device is not None for item in real.items)
        assert devices >= 30, real.name
        whole = corpus.window(rng, real, most=devices)
        twin = found[real.name.replace(".mig", "-reloaded.mig")] if real.dump else real
        resolver = resolver_from_vmdesc(twin.vmdesc) if real.dump else None
        parsed = stream.parse(whole.data, resolver)
        assert len(parsed.device_sections()) == len(whole.sections) == devices, real.name


def test_windows_are_streams_that_read() -> None:
    from vmstate import stream

    rng = random.Random(SEED)
    for real in corpus.real_streams():
        if real.vmdesc is not None:
            w = corpus.window(rng, real)
            assert len(stream.parse(w.data).device_sections()) == len(w.sections) >= 1


def test_saved_files_configs_and_dumps_read() -> None:
    from vmstate.pci.decode import decode_config
    from vmstate.qemu_dump import parse_qemu_dump
    from vmstate.saved_file import read_file

    labels = {label: read_file(data) for label, data in corpus.saved_files()}
    assert labels["data"].data is not None and labels["data"].data.size > 600
    assert labels["mtty"].data is not None and labels["mtty"].data.decoded is not None
    assert labels["config"].data is None and labels["qemu"].qemu_config is not None
    assert len(corpus.configs()) > 70
    assert all(decode_config(data) for _, data in corpus.configs())
    assert {p.parent.name for p in corpus.dump_paths()} == {"qemu", "qemu-10.0"}
    assert parse_qemu_dump(corpus.dump_subset(random.Random(SEED))).devices


def test_generated_ram_and_mapped_ram_extract_exactly() -> None:
    rng = random.Random(SEED)
    for _ in range(20):
        data, pages, _ = G.mapped_ram_stream(rng)
        extract(data, pages)  # raises InvariantError unless every page comes back
        data, pages = G.ram_passes(rng)
        assert stream.parse(data).ram_blocks  # well formed: read to the end, not refused
        extract(data, pages)


def test_a_vmdesc_nesting_200_structs_deep_is_refused_as_too_deep() -> None:
    """Depth is bounded before recursion runs out: a vmdesc whose device nests 200
    structs is refused as a decode error of that device, not a RecursionError."""
    import json

    from vmstate import stream
    from vmstate.errors import DecodeError

    real = next(r for r in corpus.real_streams() if r.name == "pc-e1000-usb-hda.mig")
    w = corpus.window(random.Random(SEED), real, most=1)
    assert w.vmdesc_at is not None
    tree = json.loads(w.data[w.vmdesc_at + 5 :])
    entry: dict[str, object] = {"vmsd_name": "x", "version": 1, "fields": []}
    for _ in range(200):
        entry = {"vmsd_name": "x", "version": 1,
                 "fields": [{"name": "s", "type": "struct", "size": 0, "struct": entry}]}
    tree["devices"][0].update(entry)
    body = json.dumps(tree).encode()
    data = w.data[: w.vmdesc_at] + b"\x06" + len(body).to_bytes(4, "big") + body
    with pytest.raises(DecodeError, match="vmdesc nests too deeply"):
        stream.parse(data)


@pytest.mark.parametrize("total", [1, 15, 1000, 1_000_000])
def test_the_long_run_runs_at_least_the_inputs_asked_for(total: int) -> None:
    chunks = plan(total, list(TARGETS))
    assert sum(count for _, _, count in chunks) >= total
    assert {target for target, _, _ in chunks} == set(TARGETS)
