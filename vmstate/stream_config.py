"""What a migration stream says before its sections, and between them: the
configuration section (machine type, page size, capabilities the destination must
share) and the commands (savevm.c's MIG_CMD_*), as QEMU 10.0 knows them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from vmstate import fields as F
from vmstate.description import Description, Subsection
from vmstate.predicates import opaque_condition

#: QEMU 10.0's commands (savevm.c mig_cmd_args): number -> (name, data length or None
#: when it varies).  QEMU refuses any other number, and a known one of another length.
COMMANDS: dict[int, tuple[str, int | None]] = {
    1: ("OPEN_RETURN_PATH", 0),
    2: ("PING", 4),
    3: ("POSTCOPY_ADVISE", None),
    4: ("POSTCOPY_LISTEN", 0),
    5: ("POSTCOPY_RUN", 0),
    6: ("POSTCOPY_RAM_DISCARD", None),
    7: ("PACKAGED", 4),
    8: ("ENABLE_COLO", 0),
    9: ("POSTCOPY_RESUME", 0),
    10: ("RECV_BITMAP", None),
    11: ("SWITCHOVER_START", 0),
}
POSTCOPY_ADVISE = 3
PACKAGED = 7

_capability = Description("capability", 1, 1, [F.uint8("len"), F.vbuffer("name", "len", 255)])
#: savevm.c's needed tests (target page bits not the default, a capability the
#: destination must share, validate-uuid): a subsection is saved when the state has it
_SENT = opaque_condition("savevm.c")
#: savevm.c's vmstate_configuration (loaded at version 0, as QEMU does)
CONFIGURATION_DESCRIPTION = Description(
    "configuration",
    1,
    0,
    [F.uint32("len"), F.vbuffer("name", "len", 255)],
    [
        Subsection(
            Description("configuration/target-page-bits", 1, 1, [F.uint32("target_page_bits")]),
            needed=_SENT,
        ),
        Subsection(
            Description(
                "configuration/capabilities",
                1,
                1,
                [
                    F.uint32("caps_count", since=1),
                    F.varray("capabilities", _capability, "caps_count", 64, since=1),
                ],
            ),
            needed=_SENT,
        ),
        Subsection(
            Description("configuration/uuid", 1, 1, [F.array("uuid", "uint8", 16, since=1)]),
            needed=_SENT,
        ),
    ],
)


@attrs.frozen
class Command:
    """A COMMAND record: its number, where it starts and its data."""

    number: int
    offset: int
    data: bytes

    @property
    def name(self) -> str:
        return COMMANDS[self.number][0]


def capabilities_of(configuration: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The capability names in a decoded configuration section."""
    caps = (configuration or {}).get("configuration/capabilities", {}).get("capabilities", [])
    return tuple(bytes(c["name"]).decode("utf-8", "replace") for c in caps)
