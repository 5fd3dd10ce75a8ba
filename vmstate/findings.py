"""What ``vmstate check`` finds: one incompatibility or warning, as data.

Every check (two description sets, a saved stream against a destination, a
saved device state against a device) reports :class:`Finding` values; waivers
accept them by section, path and rule, and the command line prints or dumps
them as JSON.
"""

from __future__ import annotations

import attrs

ERROR = "error"
WARNING = "warning"


@attrs.frozen
class Finding:
    """One incompatibility (or warning): where, which rule, and a one-line reason."""

    severity: str
    section: str
    path: str
    rule: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return attrs.asdict(self)

    def __str__(self) -> str:
        where = f"{self.section}: {self.path}" if self.path else self.section
        return f"{self.severity}: {where}: {self.reason} [{self.rule}]"
