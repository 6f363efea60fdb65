"""The semantic model of one file: built once, read by every rule. It knows nothing of individual rules."""
from __future__ import annotations

from typing import Generic, Iterator, Optional, TypeVar

import libcst as cst
from libcst.metadata import CodeRange

from gradlint.semantic.imports import ImportMap
from gradlint.semantic.records import (
    AttributeAssignment,
    CallSite,
    ClipCall,
    CompileCall,
    ElementUse,
    GradientSource,
    Iteration,
    LossScaleCall,
    MethodCall,
    MethodDefinition,
    OptimizerAttribute,
    OptimizerCall,
    OptimizerInfo,
    Pairing,
    StringTest,
    TapeInfo,
    VariableCreation,
)

R = TypeVar("R")


class RecordSet(Generic[R]):
    """Records keyed by their node: re-analysing a function replaces, never duplicates."""

    def __init__(self) -> None:
        self._by_node: dict[int, R] = {}

    def append(self, record: R) -> None:
        self._by_node[id(record.node)] = record  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[R]:
        return iter(list(self._by_node.values()))

    def __len__(self) -> int:
        return len(self._by_node)


class SemanticModel:
    """What a file does with gradients, tapes and optimizers."""

    def __init__(self, module: cst.Module, *, target_keras: int = 3, source: Optional[str] = None) -> None:
        self.module = module
        self.source = source  # the file's text, when the caller has it (else generated on demand)
        self.target_keras = target_keras
        self.imports = ImportMap()
        self.tapes: RecordSet[TapeInfo] = RecordSet()
        self.gradient_sources: RecordSet[GradientSource] = RecordSet()
        self.element_uses: RecordSet[ElementUse] = RecordSet()
        self.optimizers: RecordSet[OptimizerInfo] = RecordSet()
        self.optimizer_calls: RecordSet[OptimizerCall] = RecordSet()
        self.optimizer_attributes: RecordSet[OptimizerAttribute] = RecordSet()
        self.compile_calls: RecordSet[CompileCall] = RecordSet()
        self.attribute_assignments: RecordSet[AttributeAssignment] = RecordSet()
        self.method_calls: RecordSet[MethodCall] = RecordSet()
        self.method_definitions: RecordSet[MethodDefinition] = RecordSet()
        self.clip_calls: RecordSet[ClipCall] = RecordSet()
        self.iterations: RecordSet[Iteration] = RecordSet()
        self.pairings: RecordSet[Pairing] = RecordSet()
        self.string_tests: RecordSet[StringTest] = RecordSet()
        self.loss_scale_calls: RecordSet[LossScaleCall] = RecordSet()
        self.call_sites: RecordSet[CallSite] = RecordSet()
        self.variable_creations: RecordSet[VariableCreation] = RecordSet()
        self.regularizers: list[cst.CSTNode] = []  # `*_regularizer=` arguments and `add_loss` calls
        self.optimizer_by_key: dict[tuple, OptimizerInfo] = {}
        self.nodes: dict[int, cst.CSTNode] = {}  # nodes named by id in provenance entries
        self._positions: Optional[dict] = None

    # Positions need a code generation pass over the whole file, so they are computed only when a rule
    # reports (see positions.py for why not libcst's PositionProvider).
    def position(self, node: cst.CSTNode) -> CodeRange:
        if self._positions is None:
            from gradlint.semantic.positions import compute_positions

            self._positions = compute_positions(self.module)
        from gradlint.semantic.positions import to_range

        return to_range(self._positions[node])

    def line_of(self, node: cst.CSTNode) -> int:
        return self.position(node).start.line

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)


def build_model(module: cst.Module, *, target_keras: int = 3, source: Optional[str] = None) -> SemanticModel:
    """Run the one traversal over ``module`` (parsed from ``source``, when given) and return its model."""
    from gradlint.semantic.analyzer import Analyzer

    model = SemanticModel(module, target_keras=target_keras, source=source)
    Analyzer(module, model).run()
    return model
