"""The floor of ``vmstate analyze --format qemu``: what any analyzer built as vmstate is
(Python, argparse, attrs) pays on a stream before and after its own work.

``python analyze_floor.py --model N,N,... OUTPUT`` parses a command line as vmstate's
does, builds one frozen attrs class per number in ``--model`` with that many fields
(the classes vmstate builds to analyze the stream, counted by MODEL_PROBE), and writes
OUTPUT, the analyzer's text prepared beforehand, to standard output.  It decodes
nothing: an analyzer that decoded in no time at all would still take this long.
"""

from __future__ import annotations

import argparse
import os
import sys

import attrs


def main() -> None:
    parser = argparse.ArgumentParser(prog="analyze_floor", description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--model", default="", help="the field counts of the classes to build")
    parser.add_argument("--format", default="qemu")
    args = parser.parse_args()
    for i, count in enumerate(int(n) for n in args.model.split(",") if n):
        names = {f"f{k}": int for k in range(count)}
        attrs.frozen(type(f"Model{i}", (), {"__annotations__": names}))
    with open(args.output, "rb") as text:
        sys.stdout.buffer.write(text.read())
    sys.stdout.flush()
    os._exit(0)  # as the vmstate program ends: no interpreter teardown


#: run by the venv's interpreter: analyze *argv[1]* in process, print the field counts
#: of every class attrs built in vmstate's modules (subclasses that add no field and
#: so are no attrs classes of their own excluded)
MODEL_PROBE = """\
import contextlib, os, sys, attrs
from vmstate import cli
with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
    cli.main(["analyze", "--format", "qemu", sys.argv[1]])
seen = {}
for name, module in list(sys.modules.items()):
    if name.startswith("vmstate"):
        for value in vars(module).values():
            if isinstance(value, type) and "__attrs_attrs__" in vars(value):
                seen[value] = len(attrs.fields(value))
print(",".join(map(str, seen.values())))
"""


#: run by the venv's interpreter on *argv[1]* (a stream) and *argv[2]* (QEMU's analyzer
#: text for it): the least time, of five, that any analyzer spends in two steps of its
#: own work no Python code does faster: reading the vmdesc with the json module, and
#: writing the text from the values with its C encoder (without the indent, which
#: only its pure-Python encoder writes).  Printed in seconds.
INHERENT_PROBE = """\
import json, sys, time
from vmstate import stream
from vmstate.inputs import open_stream
with open_stream(sys.argv[1]) as opened:
    at = stream.find_vmdesc(opened.data)
    vmdesc = bytes(opened.data[at:]) if at is not None else b"{}"
text = vmdesc[vmdesc.index(b"{"):].rstrip(b"\\0").decode()
with open(sys.argv[2]) as f:
    view = json.load(f)
best = float("inf")
for _ in range(5):
    start = time.perf_counter()
    json.JSONDecoder().raw_decode(text)
    json.dumps(view)
    best = min(best, time.perf_counter() - start)
print(best)
"""


if __name__ == "__main__":
    main()
