"""The Lua scripts are found whether psd is installed or imported from a source checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from psd.scripts import NAMES, source

ROOT = Path(__file__).resolve().parent.parent

# psd imported from the checkout with no installed psd.lua package (a non-editable install
# run from the repository root): the import system finds no psd.lua at all.
WITHOUT_INSTALLED_PACKAGE = """
import importlib.abc, sys
class NoInstalledScripts(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "psd.lua":
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, NoInstalledScripts())
from psd.scripts import NAMES, source
print(all(source(n).startswith("#!lua") for n in NAMES))
"""


def test_every_script_has_a_header_listing_keys_and_argv() -> None:
    for name in NAMES:
        text = source(name)
        assert text.startswith("#!lua")
        assert "KEYS" in text and "ARGV" in text


def test_scripts_are_found_from_a_source_checkout() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_INSTALLED_PACKAGE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "True", result.stderr
