"""Every psd error has one answer per API family, decided in psd/web/errors.py; and every error
class lives in psd/errors.py (or, HTTP-only, beside the mapping), so a new one cannot slip in
unanswered elsewhere."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from psd import errors
from psd.errors import PsdError
from psd.web.errors import LEGACY, V3, WriteRejected, shape_of

SRC = Path(__file__).resolve().parent.parent / "src" / "psd"
#: Where error classes may be defined: the hierarchy, and the web's HTTP-only one.
HOMES = {SRC / "errors.py", SRC / "web" / "errors.py"}

#: Per class: its v1/v2 status, its v3 status and code (what clients have always been given).
ANSWERS: dict[type[PsdError], tuple[int, int, str]] = {
    errors.InvalidInput: (400, 422, "invalid"),
    errors.TooLarge: (413, 413, "too_large"),
    errors.CountMismatch: (422, 422, "invalid"),
    errors.KeyReused: (422, 422, "key_reused"),
    errors.Refused: (406, 422, "invalid"),
    errors.PastRetention: (406, 422, "past_retention"),
    errors.PastLimit: (406, 422, "past_limit"),
    errors.StoreError: (503, 503, "unavailable"),
    WriteRejected: (406, 422, "invalid"),
}


def every_subclass(cls: type[PsdError]) -> set[type[PsdError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= every_subclass(sub)
    return found


def test_every_error_class_has_a_decided_answer() -> None:
    assert every_subclass(PsdError) == set(ANSWERS)


@pytest.mark.parametrize("kind", list(ANSWERS), ids=lambda kind: kind.__name__)
def test_each_family_answers_an_error_in_its_own_shape(kind: type[PsdError]) -> None:
    exc = kind("went wrong") if kind is errors.StoreError else kind("went wrong", "ts2")
    v1_status, v3_status, code = ANSWERS[kind]
    v1, v3 = LEGACY.of(exc), V3.of(exc)
    assert (v1.status, v3.status) == (v1_status, v3_status)
    assert set(json.loads(v1.body)) <= {"error", "field"}
    assert json.loads(v3.body)["error"]["code"] == code


def test_the_family_of_a_request_is_its_version() -> None:
    assert shape_of("/v3/sums") is V3
    assert shape_of("/v1/write") is LEGACY and shape_of("/v2/mumt_query/1/2/3") is LEGACY


def test_error_classes_are_defined_only_beside_the_hierarchy() -> None:
    names = {cls.__name__ for cls in every_subclass(PsdError)} | {"PsdError"}
    strays = []
    for path in SRC.rglob("*.py"):
        if path in HOMES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and base.id in names for base in node.bases
            ):
                strays.append(f"{path.relative_to(SRC)}: {node.name}")
    assert not strays
