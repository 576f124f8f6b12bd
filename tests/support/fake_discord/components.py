"""Message components: walking nested layouts, and answering a modal the way Discord's MODAL_SUBMIT does."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any


def walk_components(components: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every component, nested ones (rows, containers, sections, labels) included."""
    for component in components:
        yield component
        yield from walk_components(component.get("components") or [])
        for key in ("accessory", "component"):
            if isinstance(component.get(key), dict):
                yield from walk_components([component[key]])


def modal_answers(components: list[dict[str, Any]], values: Mapping[str, str | Sequence[str]]) -> list[dict[str, Any]]:
    """The components of a MODAL_SUBMIT, mirroring the modal's layout."""
    answers: list[dict[str, Any]] = []
    for component in components:
        kind = component["type"]
        if kind == 1:
            answers.append({"type": 1, "components": modal_answers(component.get("components", []), values)})
        elif kind == 18:  # label wrapping one component
            answers.append({"type": 18, "component": modal_answers([component["component"]], values)[0]})
        elif "custom_id" in component:
            value = values.get(component["custom_id"], component.get("value") or "")
            if kind == 4:
                answers.append({"type": 4, "custom_id": component["custom_id"], "value": value})
            else:
                answers.append({"type": kind, "custom_id": component["custom_id"], "values": list(value)})
    return answers
