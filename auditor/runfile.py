"""The JSONL file of an audited run (``watch(jsonl=...)``): the one module that writes and reads it.

One JSON object per line, in this order:

* ``{"type": "run", "settings": {...}}``: the watch's settings;
* ``{"type": "step", ...}``: one line per ``StepRecord`` (``StepRecord.to_dict()``), as drained;
* ``{"type": "finding", ...}``: one line per ``Finding`` (``Finding.to_dict()``), at exit;
* ``{"type": "end", "variables": {...}, "lost_records": n, "recorded_steps": n}``, plus
  ``"errors": [...]`` when something failed inside the auditor at exit (logged, not raised).

Non-finite floats are the strings ``"nan"``, ``"inf"``, ``"-inf"`` (``records.json_float``), so
every line is strict JSON. Pure Python: ``gradlint report`` reads runs without TensorFlow.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from auditor.findings import Finding
from auditor.records import StepRecord, json_float


@dataclass
class RunStart:
    """The first line: the settings the run was watched with."""

    settings: dict = field(default_factory=dict)


@dataclass
class RunEnd:
    """The last line: the per-variable table, records lost to a full ring, records written."""

    variables: dict = field(default_factory=dict)
    lost_records: int = 0
    recorded_steps: int | None = None
    errors: list = field(default_factory=list)


class RunFileWriter:
    """Streams a run into ``path``: the run line now, step lines as records come, the findings
    and the end line at ``close``."""

    def __init__(self, path, settings: dict):
        self._out = open(os.fspath(path), "w", encoding="utf-8")
        self._write({"type": "run", "settings": settings})

    def _write(self, obj) -> None:
        self._out.write(json.dumps(obj, allow_nan=False) + "\n")

    def steps(self, records) -> None:
        for record in records:
            self._write({"type": "step", **record.to_dict()})
        self._out.flush()

    def close(self, findings, variables: dict, lost_records: int, recorded_steps: int, errors=()) -> None:
        """``variables``: ``{path: {name: value}}``; float values are written with ``json_float``."""
        for finding in findings:
            self._write({"type": "finding", **finding.to_dict()})
        table = {path: {k: (json_float(v) if isinstance(v, float) else v) for k, v in stats.items()}
                 for path, stats in variables.items()}
        end = {"type": "end", "variables": table, "lost_records": lost_records, "recorded_steps": recorded_steps}
        if errors:
            end["errors"] = [str(e) for e in errors]
        self._write(end)
        self._out.close()


def read_run_file(path, warn=None):
    """The lines of a run file as ``RunStart``, ``StepRecord``, ``Finding`` and ``RunEnd`` objects,
    one at a time (long runs are never held in memory). Lines of another type are skipped.

    Raises ``ValueError`` naming the line for a line that is not JSON or not a valid entry, and for
    a file whose first line is not the ``run`` line (not an auditor run). A last line cut short (a
    run killed while writing) is skipped with ``warn(message)`` instead."""
    with open(path, encoding="utf-8") as lines:
        first, broken = True, None
        for number, line in enumerate(lines, 1):
            if broken is not None:
                raise ValueError(broken)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                broken = f"{path}:{number}: not a JSON line ({exc.msg})"
                if first:
                    raise ValueError(f"{path}: not an auditor run file ({broken})") from None
                if not line.endswith("\n"):  # the file ends inside this line: cut short
                    if warn is not None:
                        warn(f"{path}:{number}: the last line is cut short (the run was killed while "
                             f"writing it); it is skipped")
                    return
                continue  # an error only if another line follows
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{number}: not a JSON object")
            if first and obj.get("type") != "run":
                raise ValueError(f"{path}: not an auditor run file (its first line is not "
                                 f"{{\"type\": \"run\", ...}}; write one with auditor.watch(jsonl=...))")
            first = False
            try:
                entry = _entry(obj)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: not a valid {obj.get('type')} line ({exc!r})") from None
            if entry is not None:
                yield entry
        if broken is not None:
            raise ValueError(broken)
        if first:
            raise ValueError(f"{path}: not an auditor run file (it is empty)")


def _entry(obj: dict):
    kind = obj.get("type")
    if kind == "run":
        return RunStart(obj.get("settings", {}))
    if kind == "step":
        return StepRecord.from_dict(obj)
    if kind == "finding":
        return Finding.from_dict(obj)
    if kind == "end":
        recorded = obj.get("recorded_steps")
        return RunEnd(obj.get("variables", {}), int(obj.get("lost_records", 0)),
                      None if recorded is None else int(recorded), [str(e) for e in obj.get("errors") or ()])
    return None
