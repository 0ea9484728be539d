"""User-facing errors: one line, naming the bad value and the valid choices."""

from __future__ import annotations

from collections.abc import Iterable


class LorafairError(Exception):
    """A mistake the user can fix (bad name, missing data, no network). The CLI prints it as one line."""


def choose(kind: str, value, choices: Iterable) -> None:
    """Raise a LorafairError unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise LorafairError(
            f"unknown {kind} {value!r}; valid choices: {', '.join(map(str, choices))}"
        )
