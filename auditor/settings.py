"""The settings of one watch, checked once when ``watch()`` is called. Pure Python."""
from __future__ import annotations

from dataclasses import dataclass

from gradlint.runtime_checks import RUNTIME_BY_CODE

from auditor import findings as fnd


@dataclass(frozen=True)
class WatchSettings:
    """What a watch records and how it judges (see ``auditor.watch``)."""

    every: int
    check_changes: str
    raise_on: tuple
    thresholds: dict
    history: int | None
    histogram_every: int  # 0 when nothing writes histograms (no ``logdir``)
    changes_first_steps: int
    changes_period: int

    @classmethod
    def from_arguments(cls, *, every, check_changes, raise_on, thresholds, history, histogram_every,
                       logdir) -> "WatchSettings":
        """Checked arguments of ``watch()``: a value of the wrong type raises ``TypeError``, one
        out of range ``ValueError``, each naming the argument and what it accepts."""
        check_int("every", every, 1)
        if not isinstance(check_changes, str):
            raise TypeError(f"check_changes must be 'auto', 'every' or 'off', got {_shown(check_changes)}")
        if check_changes not in ("auto", "every", "off"):
            raise ValueError(f"check_changes must be 'auto', 'every' or 'off', got {check_changes!r}")
        raise_on = _codes(raise_on)
        merged = fnd.merge_thresholds(thresholds)
        check_int("histogram_every", histogram_every, 0)
        if history is not None:
            check_int("history", history, 1, "or None")
        return cls(every=every, check_changes=check_changes, raise_on=raise_on, thresholds=merged,
                   history=history, histogram_every=histogram_every if logdir else 0,
                   changes_first_steps=int(merged["changes_first_steps"]),
                   changes_period=int(merged["changes_period"]))

    def as_dict(self) -> dict:
        """The settings as the run file and ``Audit.to_dict()`` list them."""
        return {
            "every": self.every,
            "check_changes": self.check_changes,
            "raise_on": list(self.raise_on),
            "thresholds": dict(self.thresholds),
            "history": self.history,
        }


def _shown(value) -> str:
    return f"{type(value).__name__} {value!r}"


def check_int(name: str, value, minimum: int, alternative: str = "") -> None:
    """``value`` must be an int (not a bool) of at least ``minimum``."""
    accepts = f"an int >= {minimum}" + (f" {alternative}" if alternative else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {accepts}, got {_shown(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be {accepts}, got {value!r}")


def _codes(raise_on) -> tuple:
    """``raise_on``: one code string or an iterable of code strings, each a runtime code."""
    accepts = "a runtime code string such as 'GRD104' or a tuple of them"
    if isinstance(raise_on, str):
        raise_on = (raise_on,)
    elif not isinstance(raise_on, (tuple, list, set, frozenset)):
        raise TypeError(f"raise_on must be {accepts}, got {_shown(raise_on)}")
    raise_on = tuple(raise_on)
    wrong = [c for c in raise_on if not isinstance(c, str)]
    if wrong:
        raise TypeError(f"raise_on must be {accepts}, got {_shown(wrong[0])} in it")
    unknown = [c for c in raise_on if c not in RUNTIME_BY_CODE]
    if unknown:
        raise ValueError(f"raise_on: unknown runtime codes {unknown}; known: {sorted(RUNTIME_BY_CODE)}")
    return raise_on


def check_model(model) -> None:
    """``watch(model)``: None or a model (an object with ``trainable_variables``), not an optimizer."""
    if model is None:
        return
    accepts = "a Keras model (keras.Model, tf_keras.Model), a Sonnet module, or None"
    kind = type(model)
    if hasattr(model, "apply_gradients") or "optimizers" in f"{kind.__module__}.":
        raise TypeError(f"model must be {accepts}, got the optimizer {kind.__name__}: watch() finds the "
                        f"optimizers it records by itself; pass the model they train, or nothing")
    if not hasattr(model, "trainable_variables"):
        raise TypeError(f"model must be {accepts}, got {_shown(model)}")
