"""Runtime auditor: ``with auditor.watch() as audit:`` records what gradients really do.

Importing this package does not import TensorFlow: ``watch()`` imports it when entered.
"""
from auditor.findings import DEFAULT_THRESHOLDS, AuditError, Finding
from auditor.watch import Audit, StepRecord, watch

__all__ = ["watch", "Audit", "StepRecord", "Finding", "AuditError", "DEFAULT_THRESHOLDS"]
