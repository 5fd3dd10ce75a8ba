"""Save+load of one description against the same layout in ``construct``, compiled.

The layout: a 4 KiB PCIe config space plus a 2048-vector MSI-X table (4 x u32
per vector) and its PBA, as a VFIO device's config state carries them.  Both
sides run in this process on the same state; the ratio is construct's time
over ours (target: >= 10).  Prints the figures and the same as one JSON line.

    python3 bench/bench_codec.py [--rounds N]
"""

from __future__ import annotations

import argparse
import random
import timeit

import construct as C
from _process import emit

from vmstate import fields as F
from vmstate.description import Description

VECTORS = 2048
TARGET = 10.0

MSIX_ENTRY = Description(
    "msix_entry",
    1,
    1,
    [F.uint32("addr_lo"), F.uint32("addr_hi"), F.uint32("data"), F.uint32("ctrl")],
)
CONFIG_STATE = Description(
    "pcie-config-msix",
    1,
    1,
    [
        F.buffer("config", 4096),
        F.array("msix_table", MSIX_ENTRY, VECTORS),
        F.buffer("msix_pba", VECTORS // 8),
    ],
)

CONSTRUCT = C.Struct(
    "config" / C.Bytes(4096),
    "msix_table"
    / C.Array(
        VECTORS,
        C.Struct(
            "addr_lo" / C.Int32ub, "addr_hi" / C.Int32ub, "data" / C.Int32ub, "ctrl" / C.Int32ub
        ),
    ),
    "msix_pba" / C.Bytes(VECTORS // 8),
).compile()


def make_state() -> dict:
    rng = random.Random(7)
    return {
        "config": rng.randbytes(4096),
        "msix_table": [
            {
                "addr_lo": 0xFEE00000 | rng.randrange(1 << 12),
                "addr_hi": 0,
                "data": rng.randrange(1 << 16),
                "ctrl": rng.randrange(2),
            }
            for _ in range(VECTORS)
        ],
        "msix_pba": bytes(VECTORS // 8),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    state = make_state()
    ours_bytes = CONFIG_STATE.save(state)
    theirs_bytes = CONSTRUCT.build(state)
    assert ours_bytes == theirs_bytes, "the two layouts must produce the same bytes"
    assert CONFIG_STATE.load(ours_bytes) == state

    def ours() -> None:
        CONFIG_STATE.load(CONFIG_STATE.save(state))

    def theirs() -> None:
        CONSTRUCT.parse(CONSTRUCT.build(state))

    t_ours = min(timeit.repeat(ours, number=args.rounds, repeat=5)) / args.rounds
    t_theirs = min(timeit.repeat(theirs, number=args.rounds, repeat=5)) / args.rounds
    print(f"layout: {len(ours_bytes)} bytes (4 KiB config + {VECTORS}-vector MSI-X table + PBA)")
    print(f"vmstate   save+load: {t_ours * 1e6:9.1f} us")
    print(
        f"construct save+load: {t_theirs * 1e6:9.1f} us (compiled, {C.version_string if hasattr(C, 'version_string') else C.__version__})"
    )
    print(f"ratio: vmstate is {t_theirs / t_ours:.1f}x faster (target >= {TARGET:.0f}x)")
    emit(
        {
            "bench": "codec",
            "bytes": len(ours_bytes),
            "vmstate_us": round(t_ours * 1e6, 1),
            "construct_us": round(t_theirs * 1e6, 1),
            "ratio": round(t_theirs / t_ours, 2),
            "target_ratio": TARGET,
        }
    )


if __name__ == "__main__":
    main()
