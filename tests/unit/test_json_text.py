"""`--json` output: the same text as `json.dumps(…, indent=2, ensure_ascii=False)`, whichever way it is made."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from commands.render import json_text

_LEAVES = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text()
_DOCUMENTS = st.recursive(
    _LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=24)


def _reference(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False)


@settings(max_examples=500)
@given(_DOCUMENTS)
def test_same_text_as_the_standard_library(document: Any) -> None:
    assert json_text(document) == _reference(document)


def test_what_msgspec_refuses_still_prints() -> None:
    for document in ({"big": 2**64}, {"lone": "\ud800"}, [-(2**63) - 1]):
        assert json_text(document) == _reference(document)


def test_empty_containers_and_escapes() -> None:
    document = {"a": [], "b": {}, "c": [1, {"x": 'é\u2028\x7f\x00\n"\\'}], "d": None, "e": True}
    assert json_text(document) == _reference(document)
