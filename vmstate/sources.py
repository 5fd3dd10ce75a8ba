"""Description sets from any supported source, for commands that take ``--descriptions``.

A stream's vmdesc (as ``analyze --dump desc`` prints it) describes sections by
``(idstr, instance_id)``; other sources describe device types by vmsd name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vmstate.errors import UsageError
from vmstate.stream import Resolver
from vmstate.vmdesc import resolver_from_vmdesc


def load_resolver(path: str | Path) -> Resolver:
    """A section resolver from a vmdesc JSON file."""
    source = Path(path)
    try:
        data: Any = json.loads(source.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{source}: not a JSON description file: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("devices"), list):
        return resolver_from_vmdesc(data)
    raise UsageError(f"{source}: not a vmdesc (expected an object with a 'devices' list)")
