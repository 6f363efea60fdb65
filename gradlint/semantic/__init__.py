"""The per-file semantic model: imports, tapes, gradient flows and optimizers, computed once."""
from gradlint.semantic.model import SemanticModel, build_model

__all__ = ["SemanticModel", "build_model"]
