"""`gradlint fix`: edits proposed by rules (edits.py), applied pass by pass (apply.py), written
atomically (writer.py).

Only :mod:`gradlint.fixes.edits` is imported by rules; the rest is loaded by the fix command.
"""
from gradlint.fixes.edits import Edit, Fix

__all__ = ["Edit", "Fix"]
