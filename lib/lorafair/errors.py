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


def as_int(value):
    """``int(value)`` for an integral number (numpy's too); anything else unchanged, so that the run
    spec's check refuses it by name instead of ``int`` silently cutting 1.5 to 1."""
    import numbers

    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value


def as_float(value):
    """``float(value)`` for a real number (numpy's too); anything else unchanged (see ``as_int``)."""
    import numbers

    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else value
