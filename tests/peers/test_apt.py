"""The private apt source: the system's own mirror and key, other suites."""

from __future__ import annotations

import textwrap

import pytest

from peers.apt import PeerError, deb822, one_line_sources, private_source


def test_the_private_source_is_the_systems_main_archive() -> None:
    system = textwrap.dedent("""\
        Types: deb
        URIs: http://mirror.example/debian-security
        Suites: bookworm-security
        Components: main

        # main archive
        Types: deb deb-src
        URIs: http://mirror.example/debian
        Suites: bookworm bookworm-updates
        Components: main contrib
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
        """)
    assert private_source(deb822(system), ("bookworm-backports",)) == textwrap.dedent("""\
        Types: deb
        URIs: http://mirror.example/debian
        Suites: bookworm-backports
        Components: main
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
        """)
    legacy = "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    assert "URIs: http://mirror.example/debian\n" in private_source(one_line_sources(legacy), ("bookworm-backports",))
    assert "Signed-By: /k.gpg" in private_source(one_line_sources(legacy), ("bookworm-backports",))
    with pytest.raises(PeerError):
        private_source(deb822(system.split("\n\n")[0]), ("bookworm-backports",))
