"""Every Lua script of the ``psd.lua`` package says which keys and arguments it takes."""

from __future__ import annotations

from psd.scripts import NAMES, source


def test_every_script_has_a_header_listing_keys_and_argv() -> None:
    for name in NAMES:
        text = source(name)
        assert text.startswith("#!lua")
        assert "KEYS" in text and "ARGV" in text
