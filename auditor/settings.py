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
        """Checked arguments of ``watch()``; a bad one raises ``ValueError`` naming it."""
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if check_changes not in ("auto", "every", "off"):
            raise ValueError(f"check_changes must be 'auto', 'every' or 'off', got {check_changes!r}")
        raise_on = (raise_on,) if isinstance(raise_on, str) else tuple(raise_on)
        unknown = [c for c in raise_on if c not in RUNTIME_BY_CODE]
        if unknown:
            raise ValueError(f"raise_on: unknown runtime codes {unknown}; known: {sorted(RUNTIME_BY_CODE)}")
        merged = fnd.merge_thresholds(thresholds)
        if not isinstance(histogram_every, int) or histogram_every < 0:
            raise ValueError(f"histogram_every must be an int >= 0, got {histogram_every!r}")
        if history is not None and (not isinstance(history, int) or history < 1):
            raise ValueError(f"history must be a positive int or None, got {history!r}")
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
