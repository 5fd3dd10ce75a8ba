"""pytest plugin for the guest's run (``-p vm.guest_plugin``).

The host passes the test files plus a list of the node IDs it selected (file named by
VMSTATE_GUEST_SELECT): files rather than IDs, so that a module that fails to import
is one collection error instead of aborting the whole run.  Here the selection is
applied, and every JUnit testcase is tagged with its exact node ID so the host need
not reverse-engineer JUnit's dotted names.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def function_id(node_id: str) -> str:
    """A parametrized test's ID without its parameters: what both sides agree on."""
    return node_id.split("[", 1)[0]


def selected(guest_ids: list[str], host_ids: set[str]) -> set[str]:
    """The host's IDs, plus every instance of a function whose host ID the guest lacks
    (parameters discovered at collection time differ between host and guest)."""
    unmatched = {function_id(h) for h in host_ids - set(guest_ids)}
    return {g for g in guest_ids if g in host_ids or function_id(g) in unmatched}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    select_file = os.environ.get("VMSTATE_GUEST_SELECT")
    if select_file:
        host_ids = set(Path(select_file).read_text().splitlines())
        keep = selected([item.nodeid for item in items], host_ids)
        dropped = [item for item in items if item.nodeid not in keep]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [item for item in items if item.nodeid in keep]
    for item in items:
        item.user_properties.append(("nodeid", item.nodeid))
