"""The kit rules use to propose fixes: edits on the libcst tree (edits.py) and tree helpers (tree.py).

The fix driver that applies them lives in :mod:`gradlint.fixer` and writes files with
:mod:`gradlint.writer`; nothing here imports either.
"""
from gradlint.fixes.edits import Edit, Fix

__all__ = ["Edit", "Fix"]
