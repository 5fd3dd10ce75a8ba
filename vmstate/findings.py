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
        return f"{self.severity}: {self.where()}: {self.reason} [{self.rule}]"

    def where(self) -> str:
        """Section and path, the path without the description name the section ends with
        (``e1000: mac_reg``, not ``e1000: e1000.mac_reg``)."""
        own = self.section.rsplit("/", 1)[-1]
        path = self.path
        if path == own:
            path = ""
        elif path.startswith(own) and path[len(own)] in ".[ /":
            path = path[len(own) :].lstrip(". ")
        return f"{self.section}: {path}" if path else self.section
