"""What calls mean: TensorFlow / Keras APIs, builtins, optimizers, tapes and functions of the same file."""
from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache
from typing import Optional

import libcst as cst

from gradlint.semantic import tfapi
from gradlint.semantic.env import TRUNCATED, Env, Shadowing
from gradlint.semantic.parts import Binds, Evaluates, RunsStatements
from gradlint.semantic.records import (
    CallSite,
    ClipCall,
    CompileCall,
    GradientSource,
    LossScaleCall,
    MethodCall,
    OptimizerCall,
    OptimizerInfo,
    Pairing,
    TapeInfo,
    VariableCreation,
)
from gradlint.semantic.summaries import Summaries, call_method_name, class_of, method_of
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
from gradlint.semantic.tfapi import normalize_variables
from gradlint.semantic.values import (
    ClassValue,
    FunctionValue,
    GradElem,
    InstanceValue,
    KerasObject,
    LambdaValue,
    ListDisplay,
    OptimizerValue,
    RegexValue,
    Seq,
    StrategyValue,
    StringsValue,
    TapeValue,
    TupleValue,
    Value,
    VarList,
    derived,
    iterate,
    materialize,
    new_lineage,
)
from gradlint.semantic.walk import WalkState

_INTOLERANT_BUILTINS = frozenset({
    "builtins.float", "builtins.int", "builtins.abs", "builtins.round", "builtins.len",
    "builtins.sum", "builtins.max", "builtins.min",
})
_LAZY_BUILTINS = frozenset({"zip", "map", "enumerate", "filter", "reversed"})
_CONSUMING_BUILTINS = frozenset({"list", "tuple", "sorted", "set", "dict", "sum", "any", "all", "max", "min"})
_TAPE_METHODS = frozenset({"gradient", "jacobian", "batch_jacobian"})
_LOSS_SCALE_METHODS = frozenset({"get_scaled_loss", "get_unscaled_gradients", "scale_loss"})
_LIST_WRITES = frozenset({"append", "extend", "insert"})
_ASSIGN_METHODS = frozenset({"assign", "assign_add", "assign_sub"})
_REGEX_METHODS = frozenset({"match", "search", "fullmatch"})
_REGEX_FUNCTIONS = frozenset({"re.match", "re.search", "re.fullmatch"})
_COLLECTION_NAME = re.compile(r"var|param|weight|trainable", re.IGNORECASE)
_GRADIENT_NAME = re.compile(r"grad", re.IGNORECASE)

READ, MAYBE, UNREAD = "read", "maybe", "unread"


class _NotHandled:
    """Sentinel: the call has no special meaning here."""


NOT_HANDLED = _NotHandled()


class CallInterpreter:
    """Gives calls their meaning: APIs, builtins, optimizers, tapes, functions and classes of the file."""

    def __init__(self, state: WalkState, evaluator: Evaluates, binder: Binds, functions: RunsStatements,
                 summaries: Summaries) -> None:
        self.state = state
        self.model = state.model
        self.imports = state.imports
        self.evaluator = evaluator
        self.binder = binder
        self.functions = functions
        self.summaries = summaries
        self.call_argument_provenance: list = []

    # ------------------------------------------------------------------ entry
    def eval_call(self, node: cst.Call, env: Env) -> Optional[Value]:
        func = node.func
        qualified = self.imports.resolve(func, Shadowing(env))
        method: Optional[str] = None
        receiver: Optional[Value] = None
        evaluator = self.evaluator
        state = self.state
        stack = state.provenance_stack
        stack.append(set())  # what the call is computed from (inlined: the hottest path of the walk)
        try:
            if isinstance(func, cst.Attribute):
                method = func.attr.value
                receiver = evaluator.eval_chain_base(func.value, env)
                if isinstance(receiver, GradElem):
                    evaluator.note_element_use(node, f".{method}()", ((func.value, receiver),), env,
                                               inspection=method in tfapi.TENSOR_INSPECTIONS)
                callee = evaluator.eval_quiet(func, env)
            else:
                callee = evaluator.eval(func, env, as_callee=True)
            positional, keywords, starred = self.eval_arguments(node, qualified, env)
            result = self.dispatch_call(node, func, qualified, method, receiver, callee, positional, keywords,
                                        starred, env)
        finally:
            collected = stack.pop()
        self.finish_provenance(node, qualified, method, dotted_name(func), collected)
        return result

    def eval_arguments(self, node: cst.Call, qualified: Optional[str], env: Env):
        excluded_positions, excluded_keywords = tfapi.NON_DIFFERENTIABLE_ARGS.get(qualified or "", ((), ()))
        positional: list[Optional[Value]] = []
        keywords: dict[str, Optional[Value]] = {}
        starred: list[Optional[Value]] = []
        provenances = []
        state = self.state
        for arg in node.args:
            value, provenance = self.evaluator.eval_tracked(arg.value, env)
            provenances.append(provenance)
            excluded = False
            if arg.keyword is not None:
                keywords[arg.keyword.value] = value
                excluded = arg.keyword.value in excluded_keywords
                if arg.keyword.value.endswith("_regularizer") and not is_none(arg.value):
                    self.model.regularizers.append(arg)
            elif arg.star == "*":
                starred.append(value)
            elif not arg.star:
                excluded = len(positional) in excluded_positions
                positional.append(value)
            if not excluded:
                state.note_all(provenance)
        self.call_argument_provenance = provenances
        return positional, keywords, starred

    def finish_provenance(self, node: cst.Call, qualified: Optional[str], method: Optional[str],
                          callee_text: Optional[str], collected: set) -> None:
        """Pass the call's inputs on to the enclosing expression, unless the call has no gradient."""
        state = self.state
        if qualified is not None:
            if qualified in tfapi.GRADIENT_BREAKING_CALLS:
                return state.note_break(node, tfapi.GRADIENT_BREAKING_CALLS[qualified], collected)
            if qualified.startswith("numpy."):
                return state.note_break(node, "np." + qualified[6:], collected)
            if qualified in tfapi.CAST_CALLS and _casts_to_integer(node):
                return state.note_break(node, "tf.cast to an integer or bool dtype", collected)
            if qualified in tfapi.STOP_GRADIENT or qualified in tfapi.CONSTANT_OUTPUT_CALLS:
                return None
            if qualified in tfapi.REDUCE_MEAN and state.in_replica_function:
                self.model.nodes[id(node)] = node
                state.note(("mean", id(node), state.tapes_key))
        elif method == "numpy":
            return state.note_break(node, ".numpy()", collected)
        elif method == "get_shape":
            return None  # a static shape: nothing flows through it
        elif method == "predict":
            return state.note_break(node, f"{callee_text or 'model.predict'}()", collected)
        state.note_all(collected)
        if callee_text is not None:
            state.note(("call", callee_text, state.tapes_key))
        return None

    def dispatch_call(self, node, func, qualified, method, receiver, callee, positional, keywords, starred,
                      env: Env):
        if qualified is not None:
            if qualified in tfapi.VARIABLE_CONSTRUCTORS:
                self.record_variable_name(node, 0 if qualified.endswith("get_variable") else None)
            result = self.eval_api_call(node, qualified, positional, keywords, starred, env)
            if result is not NOT_HANDLED:
                return result
            if _zip_like(qualified):
                return self.eval_zip(node, positional, starred, env)
            if _none_intolerant(qualified) and (any(type(v) is GradElem for v in positional)
                                                or any(type(v) is GradElem for v in keywords.values())):
                operands = [(a.value, v) for a, v in zip(_plain_args(node), positional)] + \
                    [(None, v) for v in keywords.values()]
                self.evaluator.note_element_use(node, _short(qualified), operands, env,
                                                inspection=_is_assertion(qualified))
            self.note_clip(node, qualified, positional, env)
            return derived(positional + list(keywords.values()), clipped=qualified in tfapi.PER_GRADIENT_CLIPS)
        if method is not None:
            handled = self.eval_method_call(node, func, method, receiver, positional, keywords, env)
            if handled is not NOT_HANDLED:
                return handled
            return derived((receiver,)) if isinstance(receiver, GradElem) else None
        if isinstance(callee, FunctionValue):
            return self.call_function(node, callee, None, positional, keywords, starred, env, skip_self=False)
        if isinstance(callee, LambdaValue):
            return self.evaluator.apply_lambda(callee, positional)
        if isinstance(callee, ClassValue):
            return KerasObject(callee.keras_class, callee) if callee.keras_class else InstanceValue(callee)
        cls = class_of(callee)
        if cls is not None:
            call_method = method_of(cls, call_method_name(cls))
            if call_method is not None:
                self.note_invoke(call_method, dotted_name(func), dotted_name(func))
        return None

    def call_function(self, node: cst.Call, function: FunctionValue, receiver_text: Optional[str], positional,
                      keywords, starred, env: Env, skip_self: bool) -> Optional[Value]:
        """A call of a function or method defined in this file."""
        self.functions.seed_function(function, positional, keywords, skip_self=skip_self)
        self.note_invoke(function, receiver_text, dotted_name(node.func))
        self.record_call_site(node, function, skip_self)
        shape = self.summaries.zip_shape(function)
        if shape is None:
            return None
        if shape.star:
            return self.eval_zip(node, positional, starred, env)
        plain = _plain_args(node)
        if any(i >= len(positional) or i >= len(plain) for i in shape.positions):
            return None
        return self.eval_zip(node, [positional[i] for i in shape.positions], [], env,
                             arguments=[plain[i] for i in shape.positions])

    def note_invoke(self, function: FunctionValue, receiver_text: Optional[str], callee_text: Optional[str]) -> None:
        state = self.state
        if state.provenance_stack:
            state.note(("invoke", function, receiver_text, state.tapes_key, callee_text))

    def record_call_site(self, node: cst.Call, function: FunctionValue, skip_self: bool) -> None:
        params = parameter_names(function.node.params)
        if skip_self and params:
            params = params[1:]
        arguments: dict[str, cst.BaseExpression] = {}
        position = 0
        for arg in node.args:
            if arg.star:
                return
            if arg.keyword is not None:
                name = arg.keyword.value
            elif position < len(params):
                name = params[position]
                position += 1
            else:
                continue
            arguments[name] = arg.value
        self.model.call_sites.append(CallSite(node, function.node, arguments))

    # -------------------------------------------------------------- APIs
    def eval_api_call(self, node: cst.Call, qualified: str, positional, keywords, starred, env: Env):
        state = self.state
        if qualified == tfapi.GRADIENT_TAPE or tfapi.is_internal_tape(qualified):
            tape = TapeInfo(node, None, literal_true(call_argument(node, 0, "persistent")))
            tape.loops = tuple(state.loops)
            self.model.tapes.append(tape)
            return TapeValue(tape)
        if qualified in tfapi.GRADIENT_FUNCTIONS:
            source, statuses, explicit = self.new_source(
                node, "tf.gradients", None, call_argument(node, 0, "ys"), call_argument(node, 1, "xs"),
                _argument_value(positional, keywords, 1, "xs"), env)
            return self.gradient_list(source, statuses, explicit)
        if qualified == tfapi.CLIP_BY_GLOBAL_NORM:
            grads = positional[0] if positional else keywords.get("t_list")
            self.evaluator.record_iteration(grads, node, lazy=True)
            gradient = grads.gradient if isinstance(grads, Seq) else None
            self.record_clip(node, gradient, env, "tf.clip_by_global_norm")
            clipped = None
            if isinstance(grads, Seq):
                element = grads.element
                if isinstance(element, GradElem):
                    element = replace(element, lineage=new_lineage(), clipped=True, derived=True)
                clipped = replace(grads, element=element, is_iterator=False, created_by=None, items=None)
            return TupleValue((clipped, None), global_clip=node)
        kind = tfapi.optimizer_kind(qualified)
        if kind is not None:
            info = OptimizerInfo(node, qualified, kind, stateless=tfapi.is_stateless_tf1_optimizer(qualified),
                                 loops=tuple(state.loops))
            info.clip_arguments = tuple(k for k in tfapi.OPTIMIZER_CLIP_ARGUMENTS
                                        if _per_replica_unaware(call_argument(node, None, k)))
            info.multi_replica_scope = state.multi_replica_scopes[-1] if state.multi_replica_scopes else None
            info.keywords = tuple((a.keyword.value, a) for a in node.args if a.keyword is not None)
            self.model.optimizers.append(info)
            return OptimizerValue(info)
        if qualified in tfapi.VARIABLE_COLLECTION_CALLS:
            return VarList(state.module.code_for_node(node))
        strategy = tfapi.strategy_class(qualified)
        if strategy is not None:
            return StrategyValue(strategy, _is_multi_replica(strategy, node))
        keras_class = tfapi.keras_object_class(qualified)
        if keras_class is not None:
            return KerasObject(keras_class)
        if qualified == "re.compile" and node.args:
            strings, literal = self.evaluator.strings_of(node.args[0].value, env)
            if strings:
                return RegexValue(StringsValue(literal))
            pattern = positional[0] if positional else None
            return RegexValue(pattern) if isinstance(pattern, StringsValue) else None
        if qualified in _REGEX_FUNCTIONS and len(node.args) >= 2:
            self.regex_test(node, node.args[0].value, positional[0] if positional else None,
                            node.args[1].value, env)
            return None
        if qualified.startswith("builtins."):
            return self.eval_builtin(node, qualified[9:], positional, keywords, starred, env)
        return NOT_HANDLED

    def regex_test(self, node: cst.Call, pattern_node, pattern_value, subject: cst.BaseExpression, env: Env) -> None:
        if not isinstance(subject, cst.Attribute):
            return
        if isinstance(pattern_value, RegexValue):
            pattern_value = pattern_value.pattern
        if isinstance(pattern_value, StringsValue):
            strings, literal = pattern_value.strings, pattern_value.node
        else:
            strings, literal = self.evaluator.strings_of(pattern_node, env) if pattern_node is not None else ([], None)
        if strings:
            self.evaluator.record_string_test(node, subject, strings, "regex", literal, env)

    def eval_builtin(self, node: cst.Call, name: str, positional, keywords, starred, env: Env):
        evaluator = self.evaluator
        if name in _LAZY_BUILTINS:
            for arg, value in zip(_plain_args(node), positional):
                evaluator.record_iteration(value, arg.value, lazy=True)
        if name == "zip":
            return self.eval_zip(node, positional, starred, env)
        if name in _CONSUMING_BUILTINS and positional:
            evaluator.record_iteration(positional[0], node.args[0])
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
                if isinstance(element, GradElem) and (is_none(predicate) or evaluator.lambda_guards(predicate)):
                    element = element.checked()
                return replace(positional[1], element=element, is_iterator=True, created_by=node, items=None)
            return None
        if name == "map":
            if len(positional) >= 2 and isinstance(positional[0], LambdaValue):
                result = evaluator.apply_lambda(positional[0], [iterate(v) for v in positional[1:]])
                return Seq(result, is_iterator=True, created_by=node) if result is not None else None
            return None
        if "builtins." + name in _INTOLERANT_BUILTINS:
            evaluator.note_element_use(node, f"{name}()", [(a.value, v) for a, v in zip(_plain_args(node), positional)],
                                       env)
        return None

    def eval_zip(self, node: cst.Call, positional, starred, env: Env, arguments=None):
        """``zip(a, b)`` (or a function that behaves as zip): pairs of the arguments' elements."""
        if starred and not positional and len(starred) == 1:
            # `zip(*lists)`: tuples holding one element of each list
            inner = iterate(starred[0])
            return Seq(Seq(iterate(inner)) if inner is not None else None, is_iterator=True, created_by=node)
        if not positional:
            return Seq(None, is_iterator=True, created_by=node)
        args = arguments if arguments is not None else _plain_args(node)
        vars_text = None
        if len(positional) == 2 and len(args) == 2 and not starred:
            gradients_first = _is_gradients(positional[0]) or not _is_gradients(positional[1])
            grads_index, vars_index = (0, 1) if gradients_first else (1, 0)
            vars_node = _aligned_base(args[grads_index].value, args[vars_index].value)
            if vars_node is not None:
                vars_text = self.variables_text(vars_node, self.binder.quiet(vars_node, env))
            else:
                vars_text = self.variables_text(args[vars_index].value, positional[vars_index])
            if not _sliced(args[grads_index].value):  # `grads[2:]` pairs with part of the variables
                self.record_pairing(node, positional[grads_index], vars_text)
        single_pair = None
        if len(args) == 2 and all(single_item_list(a.value) for a in args):
            single_pair = (args[0].value.elements[0].value, args[1].value.elements[0].value)
        return Seq(TupleValue(tuple(iterate(v) for v in positional)), is_iterator=True,
                   vars_text=vars_text, single_pair=single_pair, created_by=node)

    def eval_method_call(self, node: cst.Call, func: cst.Attribute, method: str, receiver, positional,
                         keywords, env: Env):
        state = self.state
        if isinstance(receiver, OptimizerValue):
            self.model.method_calls.append(MethodCall(node, method, receiver.info, id(env.function_env()),
                                                      expects_error=state.expects_error,
                                                      context=env.function_env().context))
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
            source, statuses, explicit = self.new_source(
                node, f"tape.{method}", tape, call_argument(node, 0, "target"), call_argument(node, 1, "sources"),
                _argument_value(positional, keywords, 1, "sources"), env)
            if method == "batch_jacobian":
                return None
            return self.gradient_list(source, statuses, explicit)
        if method == "compute_gradients":
            self.optimizer_for(func.value, receiver, env, force=True)
            var_list = call_argument(node, 1, "var_list")
            var_list_value = _argument_value(positional, keywords, 1, "var_list")
            source, statuses, explicit = self.new_source(node, "compute_gradients", None,
                                                         call_argument(node, 0, "loss"), var_list, var_list_value, env)
            vars_text = self.variables_text(var_list, var_list_value) if var_list is not None \
                else "<all trainable>"
            gradients = self.gradient_list(source, statuses, explicit)
            items = None
            if gradients.items is not None:
                items = tuple(TupleValue((item, None)) for item in gradients.items)
            return Seq(TupleValue((gradients.element, None)), vars_text=vars_text, items=items)
        if method in _LOSS_SCALE_METHODS:
            info = self.optimizer_for(func.value, receiver, env, force=looks_like(func.value, "opt"))
            self.model.loss_scale_calls.append(LossScaleCall(node, method, info, id(env.function_env())))
            if method == "get_unscaled_gradients" and positional and isinstance(positional[0], Seq):
                grads = positional[0]
                if isinstance(grads.element, GradElem):
                    return replace(grads, element=replace(grads.element, scaled=False, lineage=new_lineage()),
                                   items=None)
            return None
        if method in tfapi.OPTIMIZER_METHODS_APPLY or method == "build":
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
            if isinstance(func.value, cst.Attribute) and node.args:
                strings, literal = self.evaluator.strings_of(node.args[0].value, env)
                if strings:
                    self.evaluator.record_string_test(node, func.value, strings, method, literal, env)
            return NOT_HANDLED
        if method in _REGEX_METHODS and isinstance(receiver, RegexValue) and node.args:
            self.regex_test(node, None, receiver, node.args[0].value, env)
            return None
        if method in ("run", "experimental_run_v2") and (
                isinstance(receiver, StrategyValue) or looks_like(func.value, "strategy")):
            function = positional[0] if positional else keywords.get("fn")
            if isinstance(function, FunctionValue):
                self.functions.mark_replica_function(function)
            return None
        if method == "add_loss":
            self.model.regularizers.append(node)
            return None
        if method in tfapi.VARIABLE_METHODS:
            self.record_variable_name(node, None)
        if method in _LIST_WRITES and positional:
            written = positional[-1]
            if method == "extend":
                written = iterate(written) if isinstance(written, Seq) else None
            provenance = self.call_argument_provenance[-1] if self.call_argument_provenance else frozenset()
            self.binder.write_item(func.value, receiver, written, env, provenance)
            return NOT_HANDLED
        if method in _ASSIGN_METHODS:
            operands = [(a.value, v) for a, v in zip(_plain_args(node), positional)]
            self.evaluator.note_element_use(node, f".{method}()", operands, env)
            return NOT_HANDLED
        callee = self.method_function(func, receiver, env)
        if callee is not None:
            return self.call_function(node, callee, dotted_name(func.value), positional, keywords, [], env,
                                      skip_self=True)
        return NOT_HANDLED

    def method_function(self, func: cst.Attribute, receiver: Optional[Value], env: Env) -> Optional[FunctionValue]:
        """The method of a class of this file that ``receiver.method`` names (``self.step``, ``agent.train``)."""
        function_env = env.function_env()
        if (isinstance(func.value, cst.Name) and function_env.self_name == func.value.value
                and function_env.class_env is not None):
            candidate = function_env.class_env.names.get(func.attr.value)
            if isinstance(candidate, FunctionValue):
                return candidate
        cls = class_of(receiver)
        return method_of(cls, func.attr.value) if cls is not None else None

    def model_optimizer(self, node: cst.Attribute, owner: KerasObject, env: Env) -> Optional[Value]:
        """``self.optimizer`` of a Keras model (or ``self.model.optimizer`` of a callback): the model's own,
        compiled optimizer, a Keras optimizer of the targeted version."""
        assigned = self.binder.quiet(node, env)
        if assigned is not None:
            return assigned
        if owner.class_name not in tfapi.KERAS_MODEL_CLASSES:
            return None
        key = self.binder.binding_key(node, env) or ("model", id(owner))
        info = self.model.optimizer_by_key.get(key)
        if info is None:
            kind = tfapi.KIND_TF_KERAS if self.imports.uses_tf1_or_legacy_keras else tfapi.KIND_KERAS
            info = OptimizerInfo(node, None, kind, implicit=True, model_owned=True)
            info.keys.add(key)
            self.model.optimizers.append(info)
            self.model.optimizer_by_key[key] = info
        value = OptimizerValue(info)
        if key[0] == "self":
            class_env = env.function_env().class_env
            if class_env is not None:
                class_env.names[key[2]] = value
        return value

    # ------------------------------------------------------------- sources
    def new_source(self, node: cst.Call, api: str, tape: Optional[TapeInfo], target, sources,
                   sources_value: Optional[Value], env: Env):
        """Record a gradient source; returns it with the connection status of each listed variable."""
        state = self.state
        target_provenance = self.argument_provenance(node, target)
        statuses: Optional[list[str]] = None
        explicit: Optional[list[str]] = None
        unconnected: tuple[str, ...] = ()
        collection: Optional[VarList] = None
        if _is_zero_unconnected(call_argument(node, None, "unconnected_gradients")) or _all_watched(tape, sources):
            may_be_none = False
        elif api == "compute_gradients" and sources is None:
            may_be_none = True
        else:
            explicit = _explicit_variables(sources, sources_value)
            if explicit is not None and len(explicit) >= 2:
                statuses = self.connection(explicit, target_provenance)
                may_be_none = any(status != READ for status in statuses)
                unconnected = tuple(e for e, s in zip(explicit, statuses) if s == UNREAD)
            else:
                explicit = None
                may_be_none = self.may_include_unconnected(sources, env)
                if _local_keras_collection(sources_value):
                    collection = sources_value
        source = GradientSource(
            node, api, may_be_none, tape=tape, target=target, sources=sources,
            inside_own_tape=tape is not None and tape in state.active_tapes, loops=tuple(state.loops),
            statements_follow_in_tape_block=tape is not None and state.runs_later_in_block(tape.with_node),
            branches=tuple(state.branches), scope=id(env.function_env()),
            sources_text=self.variables_text(sources, sources_value) if sources is not None else None,
            sources_owner=_collection_owner(sources, sources_value),
            sources_names=frozenset(_listed_names(sources)),
            target_provenance=target_provenance,
            target_bound_tapes=env.tapes_when_bound(target.value) if isinstance(target, cst.Name) else None,
            target_is_computation=self.is_computation(target),
            tapes_active=state.tapes_key, in_replica_function=state.in_replica_function,
            unconnected=unconnected, collection=collection,
        )
        self.model.gradient_sources.append(source)
        return source, statuses, explicit

    def gradient_list(self, source: GradientSource, statuses, explicit) -> Seq:
        """The gradients a source returns: one per variable, each possibly None."""
        element = GradElem(source, source.may_be_none, scaled=self.is_scaled(source),
                           certain_none=source.unconnected)
        items = None
        if statuses is not None:
            items = tuple(replace(element, may_be_none=status != READ,
                                  certain_none=(variable,) if status == UNREAD else ())
                          for variable, status in zip(explicit, statuses))
        return Seq(element, items=items)

    def connection(self, variables: list[str], provenance: frozenset) -> list[str]:
        """For each listed variable: read while computing the target, maybe read (through an object that
        holds it, or a call this analysis cannot see into), or certainly never read."""
        if not provenance or TRUNCATED in provenance:
            return [MAYBE] * len(variables)
        names: set[str] = set()
        owners: set[str] = set()
        invoked: set[str] = set()
        for entry in provenance:
            kind = entry[0]
            if kind == "name":
                names.add(entry[1])
            elif kind == "invoke":
                invoked.add(entry[4] or "")
                names |= self.summaries.reads_of_call(entry[1], entry[2])
        for entry in provenance:
            if entry[0] == "call" and entry[1] not in invoked:
                callee = entry[1]
                owners.add(callee)
                owners.add(callee.rpartition(".")[0] or callee)
        statuses = []
        for variable in variables:
            prefix = variable + "."
            if variable in names or any(name.startswith(prefix) for name in names):
                statuses.append(READ)
            elif any(variable.startswith(name + ".") for name in names | owners):
                statuses.append(MAYBE)
            else:
                statuses.append(UNREAD)
        # "never read" is certain only when the computation is visible (it reads some listed variable) and
        # nothing in it collects losses behind the code's back (TF1 loss collections, `model.losses`)
        if UNREAD in statuses and (READ not in statuses or _reads_hidden_losses(provenance, owners)):
            statuses = [MAYBE if status == UNREAD else status for status in statuses]
        return statuses

    def unused_layers_of(self, source: GradientSource) -> tuple[str, ...]:
        """The layers of ``source``'s model that certainly get no gradient (computed once, on first ask)."""
        if source.unused_layers is None:
            collection = source.collection
            source.unused_layers = self.unused_layer_variables(collection) if collection is not None else ()
        return source.unused_layers

    def unused_layer_variables(self, value: VarList) -> tuple[str, ...]:
        """``model.trainable_variables`` of a model whose class (defined here) never uses some layer, when
        the file does not hand the model itself to a function (which might use the layer)."""
        cls = class_of(value.owner)
        owner_text = value.text[: -len(".trainable_variables")]
        if self.summaries.passed_as_argument(owner_text):
            return ()
        return tuple(f"{owner_text}.{attribute}" for attribute in self.summaries.unused_layers(cls))

    def argument_provenance(self, node: cst.Call, argument: Optional[cst.BaseExpression]):
        for arg, provenance in zip(node.args, self.call_argument_provenance):
            if arg.value is argument:
                return provenance
        return frozenset()

    def is_computation(self, target: Optional[cst.BaseExpression]) -> bool:
        """A target that is itself a new tensor computed at the gradient call (``a + b``, ``tf.reduce_sum(x)``)."""
        if isinstance(target, (cst.BinaryOperation, cst.UnaryOperation)):
            return True
        if isinstance(target, cst.Subscript) and len(target.slice) > 1:
            return True  # `preds[:, k]`: indexing with several indices is a tensor op of its own
        if isinstance(target, cst.Call):
            qualified = self.imports.resolve(target.func)
            return qualified is not None and qualified.startswith(("tensorflow.", "keras."))
        return False

    @staticmethod
    def is_scaled(source: GradientSource) -> bool:
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
        key = self.binder.binding_key(expr, env)
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
            owner = env.owner_of(expr.value) or self.state.module_env
            owner.names[expr.value] = OptimizerValue(info)
        return info

    def record_optimizer_call(self, node: cst.Call, method: str, info: OptimizerInfo, positional, keywords,
                              env: Env) -> None:
        for key in info.keys:
            self.model.optimizer_by_key.setdefault(key, info)
        evaluator = self.evaluator
        vars_text: Optional[str] = None
        vars_node: Optional[cst.BaseExpression] = None
        single_pair = None
        gradient = None
        pairs = None
        if method == "apply_gradients":
            pairs = positional[0] if positional else keywords.get("grads_and_vars")
            evaluator.record_iteration(pairs, node, apply=True)
            if isinstance(pairs, Seq):
                vars_text = pairs.vars_text
                single_pair = pairs.single_pair
                gradient = pairs.gradient
        elif method == "apply":
            grads_node = call_argument(node, 0, "grads")
            vars_node = call_argument(node, 1, "trainable_variables")
            grads = positional[0] if positional else keywords.get("grads")
            evaluator.record_iteration(grads, node, apply=True)
            if isinstance(grads, Seq):
                gradient = grads.gradient
            if vars_node is not None:
                vars_text = self.variables_text(vars_node, self.binder.quiet(vars_node, env))
                self.record_pairing(node, grads, vars_text)
                if single_item_list(grads_node) and single_item_list(vars_node):
                    single_pair = (grads_node.elements[0].value, vars_node.elements[0].value)
        elif method == "minimize":
            position = None if info.kind == tfapi.KIND_TF1 else 1
            vars_node = call_argument(node, position, "var_list")
            if vars_node is None:
                vars_text = "<all trainable>"
            else:
                vars_text = self.variables_text(vars_node, self.binder.quiet(vars_node, env))
                if single_item_list(vars_node):
                    single_pair = (node.args[0].value, vars_node.elements[0].value)
        elif method == "build":
            vars_node = call_argument(node, 0, "var_list")
            if vars_node is not None:
                vars_text = self.variables_text(vars_node, self.binder.quiet(vars_node, env))
        function_env = env.function_env()
        state = self.state
        self.model.optimizer_calls.append(OptimizerCall(
            node, method, info, vars_text, single_pair, tuple(state.loops), id(function_env),
            expects_error=state.expects_error, gradient=gradient, pairs=pairs,
            vars_parameter=_parameter_named(vars_node, function_env),
            receiver_parameter=_parameter_named(node.func.value if isinstance(node.func, cst.Attribute) else None,
                                                function_env),
            context=function_env.context))

    def record_compile(self, node: cst.Call, func: cst.Attribute, env: Env) -> None:
        by_keyword = call_argument(node, None, "optimizer")
        optimizer_node = by_keyword if by_keyword is not None else call_argument(node, 0, None)
        if optimizer_node is None or isinstance(optimizer_node, cst.SimpleString):
            return
        if isinstance(optimizer_node, cst.Call):
            return  # an optimizer built inline belongs to this model alone
        info = self.optimizer_for(optimizer_node, self.binder.quiet(optimizer_node, env), env,
                                  force=by_keyword is not None)
        if info is None:
            return
        state = self.state
        self.model.compile_calls.append(CompileCall(
            node, state.module.code_for_node(func.value), func.value, info, tuple(state.loops),
            expects_error=state.expects_error,
            multi_replica_scope=state.multi_replica_scopes[-1] if state.multi_replica_scopes else None))

    def record_variable_name(self, node: cst.Call, position: Optional[int]) -> None:
        argument = call_argument(node, position, "name")
        names = string_literals(argument) if isinstance(argument, cst.SimpleString) else []
        if names:
            self.model.variable_creations.append(VariableCreation(node, names[0]))

    def record_pairing(self, node: cst.Call, grads: Optional[Value], vars_text: Optional[str]) -> None:
        gradient = grads.gradient if isinstance(grads, Seq) else None
        if gradient is not None and vars_text is not None:
            self.model.pairings.append(Pairing(node, gradient, vars_text))

    def variables_text(self, node: Optional[cst.BaseExpression], value: Optional[Value]) -> Optional[str]:
        """Canonical text of a variable-list expression, or None when it cannot be compared."""
        if node is None:
            return None
        if isinstance(value, (VarList, ListDisplay)):
            return normalize_variables(value.text)
        if isinstance(node, cst.Attribute) and node.attr.value in tfapi.VARIABLE_COLLECTION_ATTRS:
            owner = dotted_name(node.value) or self.state.module.code_for_node(node.value)
            return f"{owner}.{tfapi.VARIABLE_COLLECTION_ATTRS[node.attr.value]}"
        if isinstance(node, (cst.List, cst.Tuple, cst.BinaryOperation, cst.Call)):
            return normalize_variables(self.state.module.code_for_node(node))
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
            if isinstance(current, cst.Call) and terminal_name(current.func) == "zip" and _zips_gradient_names(current):
                return True
            stack.extend(current.children)
        return False

    def is_multi_replica_scope(self, expr: cst.BaseExpression, env: Env) -> bool:
        """``with strategy.scope():`` for a strategy with several replicas."""
        if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and expr.func.attr.value == "scope":
            value = self.binder.quiet(expr.func.value, env)
            return isinstance(value, StrategyValue) and value.multi_replica is True
        return False

    # ------------------------------------------------------------- clipping
    def record_clip(self, node: cst.Call, gradient: Optional[GradElem], env: Env, api: str) -> None:
        state = self.state
        clip = ClipCall(node, gradient.lineage if gradient is not None else None,
                        bool(gradient is not None and gradient.scaled), result_named=False,
                        scope=id(env.function_env()), api=api, discarded=state.discarding is node)
        state.pending_clips.append(clip)
        self.model.clip_calls.append(clip)

    def note_clip(self, node: cst.Call, qualified: str, positional, env: Env) -> None:
        if qualified not in tfapi.PER_GRADIENT_CLIPS:
            return
        gradient = positional[0] if positional and isinstance(positional[0], GradElem) else None
        if gradient is not None or self.state.discarding is node:
            self.record_clip(node, gradient, env, _short(qualified))


def _local_keras_collection(value: Optional[Value]) -> bool:
    """``model.trainable_variables`` of a Keras model or layer whose class is defined in this file."""
    if not isinstance(value, VarList) or not value.text.endswith(".trainable_variables"):
        return False
    cls = class_of(value.owner)
    return cls is not None and bool(cls.keras_class)


def _argument_value(positional, keywords, position: int, keyword: str) -> Optional[Value]:
    return positional[position] if len(positional) > position else keywords.get(keyword)


def _plain_args(node: cst.Call) -> list[cst.Arg]:
    """Positional arguments, in order (no keywords, no unpacking)."""
    return [a for a in node.args if a.keyword is None and not a.star]


def _aligned_base(grads: cst.BaseExpression, variables: cst.BaseExpression) -> Optional[cst.BaseExpression]:
    """``zip([grads[i]], [variables[i]])`` pairs each gradient with its own variable: ``variables``."""
    if not (single_item_list(grads) and single_item_list(variables)):
        return None
    g, v = grads.elements[0].value, variables.elements[0].value
    if isinstance(g, cst.Subscript) and isinstance(v, cst.Subscript) and len(g.slice) == 1 and len(v.slice) == 1:
        gi, vi = g.slice[0].slice, v.slice[0].slice
        if isinstance(gi, cst.Index) and isinstance(vi, cst.Index) \
                and expression_key(gi.value) is not None and expression_key(gi.value) == expression_key(vi.value):
            return v.value
    return None


_HIDDEN_LOSSES = re.compile(r"get_collection|get_total_loss|get_regularization_loss|get_losses|add_loss")


def _reads_hidden_losses(provenance: frozenset, callees: set[str]) -> bool:
    """Does the target gather losses that were registered elsewhere (``tf.losses.get_total_loss()``,
    ``tf.get_collection(...)``, ``model.losses``)? Those read variables this analysis cannot see."""
    return any(entry[0] == "attr" for entry in provenance) or any(_HIDDEN_LOSSES.search(c) for c in callees)


def _sliced(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.Subscript) and any(isinstance(e.slice, cst.Slice) for e in expr.slice)


def _zips_gradient_names(call: cst.Call) -> bool:
    """``zip(grads, variables)`` spelled with names that say so (the values may be unknown parameters)."""
    names = [terminal_name(a.value) or "" for a in call.args]
    return any(_GRADIENT_NAME.search(n) for n in names) and any(
        _COLLECTION_NAME.search(n) and not _GRADIENT_NAME.search(n) for n in names)


def _explicit_variables(sources, value) -> Optional[list[str]]:
    """``[w, model.b]`` (or a name bound to such a list): the dotted names listed, else None."""
    elements = None
    if isinstance(sources, (cst.List, cst.Tuple)):
        elements = [e for e in sources.elements]
    elif isinstance(value, ListDisplay):
        elements = list(value.node.elements)
    if not elements:
        return None
    names = []
    for element in elements:
        if isinstance(element, cst.StarredElement):
            return None
        name = dotted_name(element.value)
        if name is None:
            return None
        names.append(name)
    return names


def _parameter_named(expr: Optional[cst.BaseExpression], function_env: Env) -> Optional[str]:
    context = function_env.context
    if not isinstance(expr, cst.Name) or context is None or function_env.kind != "function":
        return None
    return expr.value if expr.value in context.parameters else None


@lru_cache(maxsize=4096)
def _zip_like(qualified: str) -> bool:
    """An imported helper that behaves as zip (``zipsame``, ``safe_zip``, ``itertools.zip_longest``)."""
    name = qualified.rpartition(".")[2].lower()
    return "zip" in name and "unzip" not in name and not qualified.startswith(("tensorflow.", "numpy.", "builtins."))


def _is_gradients(value: Optional[Value]) -> bool:
    return isinstance(value, Seq) and value.gradient is not None


@lru_cache(maxsize=4096)
def _none_intolerant(qualified: str) -> bool:
    if qualified in tfapi.NONE_TOLERANT_CALLS:
        return False
    if qualified in _INTOLERANT_BUILTINS:
        return True
    return qualified.startswith(tfapi.NONE_INTOLERANT_NAMESPACES)


def _is_assertion(qualified: str) -> bool:
    """``np.testing.assert_allclose``, ``tf.debugging.assert_*``: a test checking a value."""
    return ".testing." in qualified or qualified.rpartition(".")[2].startswith("assert")


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
