"""Runtime auditor: ``with auditor.watch() as audit:`` records what gradients really do.

Importing this package does not import TensorFlow.
"""
