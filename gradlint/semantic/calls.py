"""What calls mean: TensorFlow / Keras APIs, builtins, optimizers, tapes and local functions."""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Optional

import libcst as cst

from gradlint.semantic import tfapi
from gradlint.semantic.tfapi import normalize_variables
from gradlint.semantic.env import Env, Shadowing
from gradlint.semantic.records import (
    ClipCall,
    CompileCall,
    GlobalClipMisuse,
    GradientSource,
    LossScaleCall,
    MethodCall,
    OptimizerCall,
    OptimizerInfo,
    PairingMismatch,
    TapeInfo,
    VariableNameFilter,
)
from gradlint.semantic.syntax import (
    call_argument,
    dotted_name,
    expression_key,
    is_none,
    literal_true,
    looks_like,
    parameter_names,
    single_item_list,
    string_literals,
    terminal_name,
)
from gradlint.semantic.values import (
    FunctionValue,
    GradElem,
    KerasObject,
    LambdaValue,
    ListDisplay,
    NoneValue,
    OptimizerValue,
    Seq,
    StrategyValue,
    TapeValue,
    TupleValue,
    Value,
    VarElem,
    VarList,
    iterate,
    materialize,
    new_lineage,
)

_INTOLERANT_BUILTINS = frozenset({
    "builtins.float", "builtins.int", "builtins.abs", "builtins.round", "builtins.len",
    "builtins.sum", "builtins.max", "builtins.min",
})
_ITERATING_BUILTINS = frozenset({"zip", "map", "enumerate", "filter", "list", "tuple", "sorted", "reversed"})
_CONSUMING_BUILTINS = frozenset({"list", "tuple", "sorted", "set", "dict", "sum", "any", "all", "max", "min"})
_TAPE_METHODS = frozenset({"gradient", "jacobian", "batch_jacobian"})
_LOSS_SCALE_METHODS = frozenset({"get_scaled_loss", "get_unscaled_gradients", "scale_loss"})
_COLLECTION_NAME = re.compile(r"var|param|weight|trainable", re.IGNORECASE)
_VARIABLE_NAME = re.compile(r"var|weight|param|kernel|bias|^[vw]\d*$", re.IGNORECASE)


class _NotHandled:
    """Sentinel: the call has no special meaning here."""


NOT_HANDLED = _NotHandled()


class CallSemantics:
    """Mixin of :class:`~gradlint.semantic.analyzer.Analyzer`: gives calls their meaning."""

    # ------------------------------------------------------------------ entry
    def eval_call(self, node: cst.Call, env: Env) -> Optional[Value]:
        func = node.func
        qualified = self.imports.resolve(func, Shadowing(env))
        method: Optional[str] = None
        receiver: Optional[Value] = None
        self.provenance_stack.append(set())
        try:
            if isinstance(func, cst.Attribute):
                method = func.attr.value
                receiver = self.eval(func.value, env)
                if isinstance(receiver, GradElem):
                    self.note_element_use(node, f".{method}()", (receiver,), env)
                callee = self.eval_quiet(func, env)
            else:
                callee = self.eval(func, env, as_callee=True)
            positional, keywords = self.eval_arguments(node, qualified, env)
            result = self.dispatch_call(node, func, qualified, method, receiver, callee, positional, keywords, env)
        finally:
            collected = self.provenance_stack.pop()
        self.finish_provenance(node, qualified, method, dotted_name(func), collected)
        return result

    def eval_arguments(self, node: cst.Call, qualified: Optional[str], env: Env):
        excluded_positions, excluded_keywords = tfapi.NON_DIFFERENTIABLE_ARGS.get(qualified or "", ((), ()))
        positional: list[Optional[Value]] = []
        keywords: dict[str, Optional[Value]] = {}
        provenances = []
        for arg in node.args:
            value, provenance = self.eval_tracked(arg.value, env)
            provenances.append(provenance)
            excluded = False
            if arg.keyword is not None:
                keywords[arg.keyword.value] = value
                excluded = arg.keyword.value in excluded_keywords
            elif not arg.star:
                excluded = len(positional) in excluded_positions
                positional.append(value)
            if not excluded:
                self.note_all(provenance)
            if arg.keyword is not None and arg.keyword.value.endswith("_regularizer") and not is_none(arg.value):
                self.model.regularizers.append(arg)
        self.call_argument_provenance = provenances
        return positional, keywords

    def finish_provenance(self, node: cst.Call, qualified: Optional[str], method: Optional[str],
                          callee_text: Optional[str], collected: set) -> None:
        """Pass the call's inputs on to the enclosing expression, unless the call has no gradient."""
        if qualified is not None:
            if qualified in tfapi.GRADIENT_BREAKING_CALLS:
                return self.note_break(node, tfapi.GRADIENT_BREAKING_CALLS[qualified], collected)
            if qualified.startswith("numpy."):
                return self.note_break(node, "np." + qualified[6:], collected)
            if qualified in tfapi.CAST_CALLS and _casts_to_integer(node):
                return self.note_break(node, "tf.cast to an integer or bool dtype", collected)
            if qualified in tfapi.STOP_GRADIENT or qualified in tfapi.CONSTANT_OUTPUT_CALLS:
                return None
            if qualified in tfapi.REDUCE_MEAN and self.in_replica_function:
                self.model.nodes[id(node)] = node
                self.note(("mean", id(node), self.tapes_key))
        elif method == "numpy":
            return self.note_break(node, ".numpy()", collected)
        elif method == "predict":
            return self.note_break(node, f"{callee_text or 'model.predict'}()", collected)
        self.note_all(collected)
        if callee_text is not None:
            self.note(("call", callee_text, self.tapes_key))
        return None

    def dispatch_call(self, node, func, qualified, method, receiver, callee, positional, keywords, env: Env):
        if qualified is not None:
            result = self.eval_api_call(node, qualified, positional, keywords, env)
            if result is not NOT_HANDLED:
                return result
            if _none_intolerant(qualified):
                self.note_element_use(node, _short(qualified), positional + list(keywords.values()), env)
            self.note_clip(node, qualified, positional, env)
            return _derived(positional + list(keywords.values()), clipped=qualified in tfapi.PER_GRADIENT_CLIPS)
        if method is not None:
            handled = self.eval_method_call(node, func, method, receiver, positional, keywords, env)
            if handled is not NOT_HANDLED:
                return handled
            return _derived((receiver,)) if isinstance(receiver, GradElem) else None
        if isinstance(callee, FunctionValue):
            self.seed_function(callee, positional, keywords, skip_self=False)
        elif isinstance(callee, LambdaValue):
            return self.apply_lambda(callee, positional)
        elif callee is not None and getattr(callee, "keras_class", None):
            return KerasObject(callee.keras_class)
        return None

    # -------------------------------------------------------------- APIs
    def eval_api_call(self, node: cst.Call, qualified: str, positional, keywords, env: Env):
        if qualified == tfapi.GRADIENT_TAPE or tfapi.is_internal_tape(qualified):
            tape = TapeInfo(node, None, literal_true(call_argument(node, 0, "persistent")))
            tape.loops = tuple(self.loops)
            self.model.tapes.append(tape)
            return TapeValue(tape)
        if qualified in tfapi.GRADIENT_FUNCTIONS:
            source = self.new_source(node, "tf.gradients", None,
                                     call_argument(node, 0, "ys"), call_argument(node, 1, "xs"), env)
            return Seq(GradElem(source, source.may_be_none, scaled=self.is_scaled(source)))
        if qualified == tfapi.CLIP_BY_GLOBAL_NORM:
            grads = positional[0] if positional else keywords.get("t_list")
            self.check_global_clip_result(grads, node)
            gradient = grads.gradient if isinstance(grads, Seq) else None
            self.record_clip(node, gradient, env)
            clipped = None
            if isinstance(grads, Seq):
                element = grads.element
                if isinstance(element, GradElem):
                    element = replace(element, lineage=new_lineage(), clipped=True, derived=True)
                clipped = replace(grads, element=element, is_iterator=False, created_by=None, consumed_by=None)
            return TupleValue((clipped, None), global_clip=node)
        kind = tfapi.optimizer_kind(qualified)
        if kind is not None:
            info = OptimizerInfo(node, qualified, kind, stateless=tfapi.is_stateless_tf1_optimizer(qualified),
                                 loops=tuple(self.loops))
            info.clip_arguments = tuple(k for k in tfapi.OPTIMIZER_CLIP_ARGUMENTS
                                        if _per_replica_unaware(call_argument(node, None, k)))
            info.multi_replica_scope = self.multi_replica_scopes[-1] if self.multi_replica_scopes else None
            self.model.optimizers.append(info)
            return OptimizerValue(info)
        if qualified in tfapi.VARIABLE_COLLECTION_CALLS:
            return VarList(self.module.code_for_node(node))
        strategy = tfapi.strategy_class(qualified)
        if strategy is not None:
            return StrategyValue(strategy, _is_multi_replica(strategy, node))
        keras_class = tfapi.keras_object_class(qualified)
        if keras_class is not None:
            return KerasObject(keras_class)
        if qualified.startswith("builtins."):
            return self.eval_builtin(node, qualified[9:], positional, keywords, env)
        return NOT_HANDLED

    def eval_builtin(self, node: cst.Call, name: str, positional, keywords, env: Env):
        if name in _ITERATING_BUILTINS:
            for value in positional:
                self.check_global_clip_result(value, node)
        if name == "zip":
            return self.eval_zip(node, positional)
        if name in _CONSUMING_BUILTINS and positional:
            self.consume(positional[0], node.args[0])
        if name in ("list", "tuple", "sorted"):
            return materialize(positional[0]) if positional else None
        if name == "reversed":
            return positional[0] if positional else None
        if name == "enumerate":
            if not positional:
                return None
            return Seq(TupleValue((None, iterate(positional[0]))), is_iterator=True, created_by=node)
        if name == "filter":
            if len(positional) == 2 and isinstance(positional[1], Seq):
                predicate = node.args[0].value
                element = positional[1].element
                if isinstance(element, GradElem) and (is_none(predicate) or self.lambda_guards(predicate)):
                    element = element.checked()
                return replace(positional[1], element=element, is_iterator=True, created_by=node, consumed_by=None)
            return None
        if name == "map":
            if len(positional) >= 2 and isinstance(positional[0], LambdaValue):
                result = self.apply_lambda(positional[0], [iterate(v) for v in positional[1:]])
                return Seq(result, is_iterator=True, created_by=node) if result is not None else None
            return None
        if "builtins." + name in _INTOLERANT_BUILTINS:
            self.note_element_use(node, f"{name}()", positional, env)
        return None

    def eval_zip(self, node: cst.Call, positional):
        if not positional:
            return Seq(None, is_iterator=True, created_by=node)
        vars_text = None
        if len(positional) == 2 and len(node.args) == 2:
            gradients_first = _is_gradients(positional[0]) or not _is_gradients(positional[1])
            grads_index, vars_index = (0, 1) if gradients_first else (1, 0)
            vars_text = self.variables_text(node.args[vars_index].value, positional[vars_index])
            self.check_pairing(node, positional[grads_index], vars_text)
        single_pair = None
        if len(node.args) == 2 and all(single_item_list(a.value) for a in node.args):
            single_pair = (node.args[0].value.elements[0].value, node.args[1].value.elements[0].value)
        return Seq(TupleValue(tuple(iterate(v) for v in positional)), is_iterator=True,
                   vars_text=vars_text, single_pair=single_pair, created_by=node)

    def eval_method_call(self, node: cst.Call, func: cst.Attribute, method: str, receiver, positional,
                         keywords, env: Env):
        if isinstance(receiver, OptimizerValue):
            self.model.method_calls.append(MethodCall(node, method, receiver.info, id(env.function_env()),
                                                      expects_error=self.expects_error))
        if method in _TAPE_METHODS or method == "watch":
            tape = self.tape_for(func.value, receiver, env)
            if tape is None:
                return NOT_HANDLED
            if method == "watch":
                watched = node.args[0].value if node.args else None
                elements = [e.value for e in watched.elements] if isinstance(watched, (cst.List, cst.Tuple)) \
                    else [watched] if watched is not None else []
                tape.watched.update(k for k in map(expression_key, elements) if k is not None)
                return None
            source = self.new_source(node, f"tape.{method}", tape,
                                     call_argument(node, 0, "target"), call_argument(node, 1, "sources"), env)
            if method == "batch_jacobian":
                return None
            return Seq(GradElem(source, source.may_be_none, scaled=self.is_scaled(source)))
        if method == "compute_gradients":
            self.optimizer_for(func.value, receiver, env, force=True)
            var_list = call_argument(node, 1, "var_list")
            source = self.new_source(node, "compute_gradients", None, call_argument(node, 0, "loss"), var_list, env)
            vars_text = self.variables_text(var_list, self.eval_quiet(var_list, env)) if var_list is not None \
                else "<all trainable>"
            element = GradElem(source, source.may_be_none, scaled=self.is_scaled(source))
            return Seq(TupleValue((element, None)), vars_text=vars_text)
        if method in _LOSS_SCALE_METHODS:
            info = self.optimizer_for(func.value, receiver, env, force=looks_like(func.value, "opt"))
            self.model.loss_scale_calls.append(LossScaleCall(node, method, info, id(env.function_env())))
            if method == "get_unscaled_gradients" and positional and isinstance(positional[0], Seq):
                grads = positional[0]
                if isinstance(grads.element, GradElem):
                    return replace(grads, element=replace(grads.element, scaled=False, lineage=new_lineage()))
            return None
        if method in ("apply_gradients", "apply", "minimize", "build"):
            force = method == "apply_gradients" or looks_like(func.value, "opt")
            info = self.optimizer_for(func.value, receiver, env, force=force)
            if info is None:
                return NOT_HANDLED
            self.record_optimizer_call(node, method, info, positional, keywords, env)
            return None
        if method == "compile":
            self.record_compile(node, func, env)
            return None
        if method in ("startswith", "endswith"):
            if isinstance(func.value, cst.Attribute) and func.value.attr.value == "name" and node.args:
                self.note_name_filter(node, env, subject=func.value.value, literal_node=node.args[0].value)
            return NOT_HANDLED
        if method in ("run", "experimental_run_v2") and (
                isinstance(receiver, StrategyValue) or looks_like(func.value, "strategy")):
            function = positional[0] if positional else keywords.get("fn")
            if isinstance(function, FunctionValue):
                self.replica_functions.add(id(function.node))
                if self.passes.get(id(function.node), 0) > 0:
                    self.schedule(function)
            return None
        if method == "add_loss":
            self.model.regularizers.append(node)
            return None
        callee = self.method_function(func, env)
        if callee is not None:
            self.seed_function(callee, positional, keywords, skip_self=True)
            return None
        return NOT_HANDLED

    # ------------------------------------------------------------- sources
    def new_source(self, node: cst.Call, api: str, tape: Optional[TapeInfo], target, sources,
                   env: Env) -> GradientSource:
        unconnected = call_argument(node, None, "unconnected_gradients")
        may_be_none = (
            not _is_zero_unconnected(unconnected)
            and not _all_watched(tape, sources)
            and (api == "compute_gradients" and sources is None or self.may_include_unconnected(sources, env))
        )
        target_provenance = self.argument_provenance(node, target)
        sources_value = self.eval_quiet(sources, env) if sources is not None else None
        source = GradientSource(
            node, api, may_be_none, tape=tape, target=target, sources=sources,
            inside_own_tape=tape is not None and tape in self.active_tapes, loops=tuple(self.loops),
            statements_follow_in_tape_block=tape is not None and self.runs_later_in_block(tape.with_node),
            branches=tuple(self.branches), scope=id(env.function_env()),
            sources_text=self.variables_text(sources, sources_value) if sources is not None else None,
            sources_owner=_collection_owner(sources, sources_value),
            sources_names=frozenset(_listed_names(sources)),
            target_provenance=target_provenance,
            target_bound_tapes=env.tapes_when_bound(target.value) if isinstance(target, cst.Name) else None,
            target_is_computation=self.is_computation(target),
            tapes_active=self.tapes_key, in_replica_function=self.in_replica_function,
        )
        self.model.gradient_sources.append(source)
        return source

    def argument_provenance(self, node: cst.Call, argument: Optional[cst.BaseExpression]):
        for arg, provenance in zip(node.args, self.call_argument_provenance):
            if arg.value is argument:
                return provenance
        return frozenset()

    def is_computation(self, target: Optional[cst.BaseExpression]) -> bool:
        """A target that is itself a new tensor computed at the gradient call (``a + b``, ``tf.reduce_sum(x)``)."""
        if isinstance(target, (cst.BinaryOperation, cst.UnaryOperation)):
            return True
        if isinstance(target, cst.Call):
            qualified = self.imports.resolve(target.func)
            return qualified is not None and qualified.startswith(("tensorflow.", "keras."))
        return False

    def is_scaled(self, source: GradientSource) -> bool:
        return any(entry[0] == "call" and entry[1].endswith((".get_scaled_loss", ".scale_loss"))
                   for entry in source.target_provenance)

    def may_include_unconnected(self, sources: Optional[cst.BaseExpression], env: Env) -> bool:
        """Can the differentiated sources contain variables the target does not use?

        Variable collections (``model.trainable_variables``, ``tf.trainable_variables()``, names such as
        ``params`` / ``var_list``) and explicit lists of several variables can. A single tensor the user
        picked (``tape.gradient(y, x)``, ``tf.gradients(loss, [logits])``) is a deliberate derivative, and
        ``tape.watched_variables()`` holds only variables the forward pass used.
        """
        if sources is None:
            return False
        if isinstance(sources, cst.Name) and any(
                e[0] == "call" and e[1].endswith(".watched_variables") for e in env.provenance_of(sources.value)):
            return False
        if isinstance(sources, cst.Call) and isinstance(sources.func, cst.Attribute) \
                and sources.func.attr.value == "watched_variables":
            return False
        stack = [sources]
        while stack:
            current = stack.pop()
            if isinstance(current, cst.Attribute) and current.attr.value in tfapi.VARIABLE_COLLECTION_ATTRS:
                return True
            if isinstance(current, (cst.List, cst.Tuple)):
                if len(current.elements) >= 2 or any(isinstance(e, cst.StarredElement) for e in current.elements):
                    return True
                continue  # one tensor listed explicitly
            if isinstance(current, cst.BinaryOperation):
                stack.extend((current.left, current.right))
            elif isinstance(current, cst.Call):
                name = self.imports.resolve(current.func)
                if name in tfapi.VARIABLE_COLLECTION_CALLS or name in ("builtins.list", "builtins.tuple"):
                    return True
            elif isinstance(current, (cst.Name, cst.Attribute)):
                return _COLLECTION_NAME.search(terminal_name(current) or "") is not None
        return False

    # ----------------------------------------------------------- optimizers
    def tape_for(self, expr: cst.BaseExpression, value: Optional[Value], env: Env) -> Optional[TapeInfo]:
        """The tape an expression holds; a name containing 'tape' used as one becomes an implicit tape."""
        if isinstance(value, TapeValue):
            return value.tape
        if not looks_like(expr, "tape"):
            return None
        tape = TapeInfo(expr, terminal_name(expr), persistent=False, implicit=True)
        if isinstance(expr, cst.Name):
            owner = env.owner_of(expr.value) or env.function_env()
            owner.names[expr.value] = TapeValue(tape)
        return tape

    def optimizer_for(self, expr: cst.BaseExpression, value: Optional[Value], env: Env, force: bool):
        """The optimizer an expression holds; names used as optimizers become implicit optimizers."""
        if isinstance(value, OptimizerValue):
            return value.info
        if not force:
            return None
        key = self.binding_key(expr, env)
        if key is None:
            return None
        info = self.model.optimizer_by_key.get(key)
        if info is None:
            info = OptimizerInfo(expr, None, None, implicit=True)
            info.keys.add(key)
            self.model.optimizers.append(info)
        self.model.optimizer_by_key[key] = info
        if key[0] == "self":
            class_env = env.function_env().class_env
            if class_env is not None:
                class_env.names[key[2]] = OptimizerValue(info)
        elif isinstance(expr, cst.Name):
            owner = env.owner_of(expr.value) or self.module_env
            owner.names[expr.value] = OptimizerValue(info)
        return info

    def record_optimizer_call(self, node: cst.Call, method: str, info: OptimizerInfo, positional, keywords,
                              env: Env) -> None:
        for key in info.keys:
            self.model.optimizer_by_key.setdefault(key, info)
        vars_text: Optional[str] = None
        single_pair = None
        gradient = None
        if method == "apply_gradients":
            pairs = positional[0] if positional else keywords.get("grads_and_vars")
            self.check_global_clip_result(pairs, node)
            if isinstance(pairs, Seq):
                vars_text = pairs.vars_text
                single_pair = pairs.single_pair
                gradient = pairs.gradient
                self.consume(pairs, node)
        elif method == "apply":
            grads_node = call_argument(node, 0, "grads")
            vars_node = call_argument(node, 1, "trainable_variables")
            grads = positional[0] if positional else keywords.get("grads")
            self.check_global_clip_result(grads, node)
            if isinstance(grads, Seq):
                gradient = grads.gradient
            if vars_node is not None:
                vars_text = self.variables_text(vars_node, self.eval_quiet(vars_node, env))
                self.check_pairing(node, grads, vars_text)
                if single_item_list(grads_node) and single_item_list(vars_node):
                    single_pair = (grads_node.elements[0].value, vars_node.elements[0].value)
        elif method == "minimize":
            position = None if info.kind == tfapi.KIND_TF1 else 1
            vars_node = call_argument(node, position, "var_list")
            if vars_node is None:
                vars_text = "<all trainable>"
            else:
                vars_text = self.variables_text(vars_node, self.eval_quiet(vars_node, env))
                if single_item_list(vars_node):
                    single_pair = (node.args[0].value, vars_node.elements[0].value)
        elif method == "build":
            vars_node = call_argument(node, 0, "var_list")
            if vars_node is not None:
                vars_text = self.variables_text(vars_node, self.eval_quiet(vars_node, env))
        self.model.optimizer_calls.append(OptimizerCall(
            node, method, info, vars_text, single_pair, tuple(self.loops), id(env.function_env()),
            expects_error=self.expects_error, gradient=gradient))

    def record_compile(self, node: cst.Call, func: cst.Attribute, env: Env) -> None:
        by_keyword = call_argument(node, None, "optimizer")
        optimizer_node = by_keyword if by_keyword is not None else call_argument(node, 0, None)
        if optimizer_node is None or isinstance(optimizer_node, cst.SimpleString):
            return
        if isinstance(optimizer_node, cst.Call):
            return  # an optimizer built inline belongs to this model alone
        info = self.optimizer_for(optimizer_node, self.eval_quiet(optimizer_node, env), env,
                                  force=by_keyword is not None)
        if info is None:
            return
        self.model.compile_calls.append(CompileCall(
            node, self.module.code_for_node(func.value), func.value, info, tuple(self.loops),
            expects_error=self.expects_error,
            multi_replica_scope=self.multi_replica_scopes[-1] if self.multi_replica_scopes else None))

    def variables_text(self, node: Optional[cst.BaseExpression], value: Optional[Value]) -> Optional[str]:
        """Canonical text of a variable-list expression, or None when it cannot be compared."""
        if node is None:
            return None
        if isinstance(value, (VarList, ListDisplay)):
            return normalize_variables(value.text)
        if isinstance(node, cst.Attribute) and node.attr.value in tfapi.VARIABLE_COLLECTION_ATTRS:
            owner = dotted_name(node.value) or self.module.code_for_node(node.value)
            return f"{owner}.{tfapi.VARIABLE_COLLECTION_ATTRS[node.attr.value]}"
        if isinstance(node, (cst.List, cst.Tuple, cst.BinaryOperation, cst.Call)):
            return normalize_variables(self.module.code_for_node(node))
        return None

    def is_over_variables(self, expr: cst.BaseExpression, value: Optional[Value], env: Env) -> bool:
        """Does a loop header iterate over gradients or variables (rather than batches/epochs)?"""
        if isinstance(value, VarList) or (isinstance(value, Seq) and (
                value.gradient is not None or isinstance(value.element, TupleValue) and value.vars_text)):
            return True
        stack = [expr]
        while stack:
            current = stack.pop()
            if isinstance(current, cst.Attribute) and current.attr.value in tfapi.VARIABLE_COLLECTION_ATTRS:
                return True
            if isinstance(current, cst.Name):
                bound = env.lookup(current.value)
                if isinstance(bound, VarList) or (isinstance(bound, Seq) and bound.gradient is not None):
                    return True
            stack.extend(current.children)
        return False

    def is_multi_replica_scope(self, expr: cst.BaseExpression, env: Env) -> bool:
        """``with strategy.scope():`` for a strategy with several replicas."""
        if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and expr.func.attr.value == "scope":
            value = self.eval_quiet(expr.func.value, env)
            return isinstance(value, StrategyValue) and value.multi_replica is True
        return False

    # ------------------------------------------------------ rule-specific facts
    def check_global_clip_result(self, value: Optional[Value], use: cst.CSTNode) -> None:
        """``grads = tf.clip_by_global_norm(...)`` then ``grads`` used as a list of gradients."""
        if isinstance(value, TupleValue) and value.assigned_in is not None:
            self.model.global_clip_misuses.append(GlobalClipMisuse(value.assigned_in, use))

    def record_clip(self, node: cst.Call, gradient: Optional[GradElem], env: Env) -> None:
        clip = ClipCall(node, gradient.lineage if gradient is not None else None,
                        bool(gradient is not None and gradient.scaled), result_named=False,
                        scope=id(env.function_env()))
        self.pending_clips.append(clip)
        self.model.clip_calls.append(clip)

    def note_clip(self, node: cst.Call, qualified: str, positional, env: Env) -> None:
        if qualified in tfapi.PER_GRADIENT_CLIPS and positional and isinstance(positional[0], GradElem):
            self.record_clip(node, positional[0], env)

    def check_pairing(self, node: cst.Call, grads: Optional[Value], vars_text: Optional[str]) -> None:
        """Gradients taken for one variable list, paired with another."""
        gradient = grads.gradient if isinstance(grads, Seq) else None
        if gradient is None or vars_text is None:
            return
        sources_text = gradient.source.sources_text
        if sources_text is not None and sources_text != vars_text:
            self.model.pairing_mismatches.append(PairingMismatch(node, sources_text, vars_text, gradient.source))

    def note_name_filter(self, node: cst.CSTNode, env: Env, subject=None, literal_node=None) -> None:
        """``v.name == 'dense/kernel:0'``, ``v.name.startswith('x:0')``, ``v.name in ['a:0']``."""
        if subject is None:
            if not isinstance(node, cst.Comparison) or len(node.comparisons) != 1:
                return
            left, right = node.left, node.comparisons[0].comparator
            for attribute, other in ((left, right), (right, left)):
                if isinstance(attribute, cst.Attribute) and attribute.attr.value == "name":
                    subject, literal_node = attribute.value, other
                    break
            if subject is None:
                return
        literals = [s for s in string_literals(literal_node) if ":0" in s]
        if literals and self.is_variable(subject, env):
            self.model.name_filters.append(VariableNameFilter(node, literals[0], expects_error=self.expects_error))

    def is_variable(self, expr: cst.BaseExpression, env: Env) -> bool:
        """A Keras variable: an element of a model's variable collection, or a variable-like name in a
        file that uses Keras (plain ``tf.Variable`` names do end in ':0')."""
        value = self.eval_quiet(expr, env)
        if isinstance(value, VarElem):
            return not value.collection.startswith("tf.")
        resolved = self.imports.resolve(expr) if isinstance(expr, (cst.Name, cst.Attribute)) else None
        return resolved is None and _VARIABLE_NAME.search(terminal_name(expr) or "") is not None

    # ------------------------------------------------------- local functions
    def method_function(self, func: cst.Attribute, env: Env) -> Optional[FunctionValue]:
        function_env = env.function_env()
        if (isinstance(func.value, cst.Name) and function_env.self_name == func.value.value
                and function_env.class_env is not None):
            candidate = function_env.class_env.names.get(func.attr.value)
            if isinstance(candidate, FunctionValue):
                return candidate
        return None

    def seed_function(self, function: FunctionValue, positional, keywords, skip_self: bool) -> None:
        params = parameter_names(function.node.params)
        if skip_self and params:
            params = params[1:]
        seeds = self.seeds.setdefault(id(function.node), {})
        changed = False
        for name, value in list(zip(params, positional)) + [(k, v) for k, v in keywords.items() if k in params]:
            if value is not None and not isinstance(value, (NoneValue, FunctionValue, LambdaValue)) \
                    and seeds.get(name) is None:
                seeds[name] = value
                changed = True
        if changed and self.passes.get(id(function.node), 0) > 0:
            self.schedule(function)


def _derived(values, clipped: bool = False) -> Optional[GradElem]:
    """The result of an operation on a gradient: a new, non-None gradient of the same source."""
    for value in values:
        if isinstance(value, GradElem):
            return GradElem(value.source, may_be_none=False, derived=True, clipped=clipped, scaled=value.scaled)
    return None


def _is_gradients(value: Optional[Value]) -> bool:
    return isinstance(value, Seq) and value.gradient is not None


def _none_intolerant(qualified: str) -> bool:
    if qualified in tfapi.NONE_TOLERANT_CALLS:
        return False
    if qualified in _INTOLERANT_BUILTINS:
        return True
    return qualified.startswith(tfapi.NONE_INTOLERANT_NAMESPACES)


def _short(qualified: str) -> str:
    for long, short in (("tensorflow.", "tf."), ("numpy.", "np.")):
        if qualified.startswith(long):
            return short + qualified[len(long):]
    return qualified


def _all_watched(tape: Optional[TapeInfo], sources: Optional[cst.BaseExpression]) -> bool:
    """Sources that are exactly tensors the user watched on this tape (inputs, not model variables)."""
    if tape is None or sources is None or not tape.watched:
        return False
    elements = [e.value for e in sources.elements] if isinstance(sources, (cst.List, cst.Tuple)) else [sources]
    return bool(elements) and all(expression_key(e) in tape.watched for e in elements)


def _is_zero_unconnected(expr: Optional[cst.BaseExpression]) -> bool:
    if expr is None:
        return False
    if isinstance(expr, cst.SimpleString):
        value = expr.evaluated_value
        return isinstance(value, str) and value.lower() == "zero"
    name = dotted_name(expr)
    return name is not None and name.upper().endswith(".ZERO")


def _casts_to_integer(node: cst.Call) -> bool:
    dtype = call_argument(node, 1, "dtype")
    if dtype is None:
        return False
    text = dotted_name(dtype) or (string_literals(dtype)[0] if string_literals(dtype) else "")
    return text.rpartition(".")[2] in tfapi.NON_DIFFERENTIABLE_DTYPE


def _per_replica_unaware(argument: Optional[cst.BaseExpression]) -> bool:
    """A clip argument that is set and not already scaled by the replica count."""
    if argument is None or is_none(argument):
        return False
    return "num_replicas_in_sync" not in {n for n in _names(argument)}


def _names(expr: cst.CSTNode):
    stack = [expr]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.Name):
            yield current.value
        elif isinstance(current, cst.Attribute):
            yield current.attr.value
            stack.append(current.value)
        else:
            stack.extend(current.children)


def _is_multi_replica(strategy: str, node: cst.Call) -> Optional[bool]:
    if strategy in tfapi.SINGLE_REPLICA_STRATEGIES:
        return False
    if strategy in tfapi.MULTI_REPLICA_STRATEGIES:
        devices = call_argument(node, 0, "devices")
        if isinstance(devices, (cst.List, cst.Tuple)) and len(devices.elements) == 1:
            return False
        return True
    return None


def _collection_owner(sources: Optional[cst.BaseExpression], value: Optional[Value]) -> Optional[str]:
    """``model`` for ``model.trainable_variables`` (directly or through a name bound to it)."""
    text = None
    if isinstance(sources, cst.Attribute) and sources.attr.value in tfapi.VARIABLE_COLLECTION_ATTRS:
        text = dotted_name(sources.value)
    elif isinstance(value, VarList) and "+" not in value.text and "(" not in value.text:
        text = value.text.rpartition(".")[0] or None
    return text


def _listed_names(sources: Optional[cst.BaseExpression]) -> list[str]:
    if isinstance(sources, (cst.List, cst.Tuple)):
        return [n for n in (dotted_name(e.value) for e in sources.elements) if n]
    name = dotted_name(sources) if sources is not None else None
    return [name] if name else []
