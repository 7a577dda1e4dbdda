"""Agents: a model and its tools in a function-calling loop, through `Gateway.handle`.

Each turn the model either calls one tool or answers. With `tool_calling: grammar` the
model answers JSON decoded under a grammar built from the tools' schemas (llama.cpp reads
`response_format.schema`), so a call names a real tool with arguments of the right shape
by construction; arguments are validated against the tool's schema either way. The loop
stops at an answer, at `max_turns`, when a call repeats one already made (same tool, same
arguments: a loop) or before a turn that could take it past its budget of tokens or of cost
(priced from the same table the gateway charges with). Each turn is checkpointed, so a
resumed run replays finished turns instead of calling tools again; each turn and each tool
call is a span of the run's trace.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from keel.calls import Call
from keel.errors import InvalidRequest
from keel.gateway.answer import Answer
from keel.tracing.model import RequestTrace
from keel.workflows.compiled import Validator
from keel.workflows.engine import Result, RunState
from keel.workflows.runtime import Runtime
from keel.workflows.spans import INPUT, OUTPUT
from keel.workflows.spec import AgentSpec, HttpTool, KbTool, WorkflowTool
from keel.workflows.steps.http import secret_headers, send
from keel.workflows.steps.llm import (
    answer_text,
    call_cost,
    call_id,
    metadata,
    usage_split,
    usage_tokens,
)
from keel.workflows.store import Checkpoint

KB_PARAMETERS = {
    "type": "object",
    "properties": {"query": {"type": "string", "minLength": 1}},
    "required": ["query"],
    "additionalProperties": False,
}
Tool = HttpTool | KbTool | WorkflowTool


def parameters(tool: Tool) -> dict[str, Any]:
    return KB_PARAMETERS if isinstance(tool, KbTool) else tool.parameters


def decision_schema(spec: AgentSpec) -> dict[str, Any]:
    """One JSON object: a call of one of the tools with its arguments, or the answer."""
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"const": tool.name}, "arguments": parameters(tool)},
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        for tool in spec.tools
    ]
    options.append(
        {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": False,
        }
    )
    return {"anyOf": options}


def instructions(spec: AgentSpec) -> str:
    if spec.tool_calling == "native" or not spec.tools:
        return spec.instructions
    lines = [spec.instructions, "", "Tools you may call:"]
    for tool in spec.tools:
        schema = orjson.dumps(parameters(tool)).decode()
        lines.append(f"- {tool.name}: {tool.description} Arguments: {schema}")
    lines.append(
        'Reply with JSON only: {"tool": NAME, "arguments": {...}} to call a tool, '
        'or {"answer": TEXT} when you can answer.'
    )
    return "\n".join(lines)


def _canonical(arguments: Any) -> str:
    return orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS).decode()


class AgentRunner:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self._validators: dict[tuple[str, str, str], Validator] = {}

    def _validator(self, spec: AgentSpec, tool: Tool) -> Validator:
        key = (spec.name, spec.content_hash(), tool.name)
        found = self._validators.get(key)
        if found is None:
            found = self._validators[key] = Validator(parameters(tool))
        return found

    async def __call__(self, spec: AgentSpec, text: str, run: RunState, key: str) -> Result:
        tools = {tool.name: tool for tool in spec.tools}
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": instructions(spec)},
            {"role": "user", "content": text},
        ]
        seen: set[tuple[str, str]] = set()
        calls: list[dict[str, Any]] = []
        spent = Spent()
        last_prompt = 0
        for turn in range(spec.max_turns):
            turn_key = f"{key}.turn{turn}"
            saved = run.checkpoints.get(turn_key)
            if saved is not None and saved.status == "done":
                record = saved.output
            else:
                pending = sum(len(str(m.get("content") or "")) for m in messages[-2:]) // 3
                reason = self._over_budget(spec, run, spent, last_prompt + pending)
                if reason is not None:
                    return _stop("budget", calls, spent, turn, text, reason=reason)
                started = time.time_ns()
                record = await self._traced_turn(spec, tools, messages, run, key, turn_key, seen)
                if run.save is not None:
                    await run.save(
                        Checkpoint(
                            turn_key,
                            "agent_turn",
                            "done",
                            record,
                            None,
                            started // 1000,
                            time.time_ns() // 1000,
                            tokens=record["tokens"],
                            cost=record.get("cost"),
                        )
                    )
            spent.add(record)
            last_prompt = record.get("prompt_tokens", 0)
            messages += record["messages"]
            if record.get("call") is not None:
                calls.append(record["call"])
                seen.add((record["call"]["tool"], _canonical(record["call"]["arguments"])))
            if record["stop"] is not None:
                return _stop(record["stop"], calls, spent, turn + 1, text, record.get("answer"))
        return _stop("max_turns", calls, spent, spec.max_turns, text)

    def _over_budget(self, spec: AgentSpec, run: RunState, spent: Spent, prompt: int) -> str | None:
        """Why the next turn could take the run past its budget, or None when it fits: the
        next turn's prompt (estimated) and its whole max_tokens, priced at the dearest
        target the agent's model may be routed to."""
        budget = spec.budget
        if budget.tokens is not None and spent.tokens + prompt + spec.max_tokens > budget.tokens:
            return (
                f"the next turn could use {prompt + spec.max_tokens} tokens; with "
                f"{spent.tokens} used, that passes the budget of {budget.tokens} tokens"
            )
        if budget.cost_usd is None:
            return None
        price_in, price_out = prices(self.runtime, run.principal.project_id, spec.model)
        pending = (prompt * price_in + spec.max_tokens * price_out) / 1_000_000
        if spent.cost + pending > budget.cost_usd:
            return (
                f"the next turn could cost ${pending:.6f}; with ${spent.cost:.6f} spent, "
                f"that passes the budget of ${budget.cost_usd:g}"
            )
        return None

    async def _traced_turn(
        self,
        spec: AgentSpec,
        tools: dict[str, Tool],
        messages: list[dict[str, Any]],
        run: RunState,
        key: str,
        turn_key: str,
        seen: set[tuple[str, str]],
    ) -> dict[str, Any]:
        """One turn, as a span under the agent's step with its tokens, cost and decision."""
        trace = run.trace
        span = trace.begin(f"workflow.{turn_key}", f"workflow.{key}") if trace else None
        try:
            record = await self._turn(spec, tools, messages, run, key, turn_key, seen)
        except BaseException as exc:
            if span is not None:
                RequestTrace.end(span, exc)
            raise
        if span is not None:
            RequestTrace.end(span)
            span.attributes = {
                "keel.workflow.kind": "agent_turn",
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": spec.model,
                "gen_ai.usage.input_tokens": record.get("prompt_tokens", 0),
                "gen_ai.usage.output_tokens": record.get("completion_tokens", 0),
                INPUT: messages[-2:] if len(messages) > 2 else messages,
                OUTPUT: {k: record.get(k) for k in ("stop", "answer", "call")},
            }
            if record.get("cost") is not None:
                span.attributes["keel.cost"] = record["cost"]
        return record

    async def _turn(
        self,
        spec: AgentSpec,
        tools: dict[str, Tool],
        messages: list[dict[str, Any]],
        run: RunState,
        key: str,
        turn_key: str,
        seen: set[tuple[str, str]],
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": spec.model,
            "messages": messages,
            "max_tokens": spec.max_tokens,
            "temperature": spec.temperature,
        }
        if spec.tool_calling == "grammar":
            body["response_format"] = {"type": "json_object", "schema": decision_schema(spec)}
        elif spec.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": parameters(t),
                    },
                }
                for t in spec.tools
            ]
        call = Call("chat/completions", body, run.principal, call_id(), metadata=metadata(run, key))
        answer = await self.runtime.gateway.handle(call)
        assert isinstance(answer, Answer)
        used = usage_tokens(answer.body) or 0
        prompt, completion = usage_split(answer.body)
        record: dict[str, Any] = {
            "tokens": used,
            "prompt_tokens": prompt or 0,
            "completion_tokens": completion or 0,
            "cost": call_cost(self.runtime, run.principal.project_id, answer),
            "messages": [],
            "call": None,
            "stop": None,
        }
        name, arguments, said, call_ref = _decision(spec, answer.body)
        if name is None:
            record.update(
                stop="answer", answer=said, messages=[{"role": "assistant", "content": said}]
            )
            return record
        assistant: dict[str, Any] = {"role": "assistant", "content": said}
        if call_ref is not None:
            assistant = {"role": "assistant", "content": None, "tool_calls": [call_ref]}
        tool = tools.get(name)
        entry: dict[str, Any] = {"tool": name, "arguments": arguments, "valid": False}
        record["call"] = entry
        if tool is None:
            result: Any = {"error": f"unknown tool {name!r}; tools: {', '.join(tools)}"}
        else:
            problem = self._validator(spec, tool).problem(arguments)
            entry["valid"] = problem is None
            if problem is not None:
                result = {"error": f"arguments do not match the tool's schema {problem}"}
            elif (name, _canonical(arguments)) in seen:
                entry["repeated"] = True  # not sent again: the loop stops here
                record.update(stop="loop", messages=[assistant])
                return record
            else:
                result = await self._call_tool(tool, arguments, run, turn_key)
        entry["result"] = result
        reply = orjson.dumps(result).decode()[:4000]
        if call_ref is not None:
            tool_message = {"role": "tool", "tool_call_id": call_ref["id"], "content": reply}
        else:
            tool_message = {"role": "user", "content": f"Tool {name} returned: {reply}"}
        record["messages"] = [assistant, tool_message]
        return record

    async def _call_tool(self, tool: Tool, arguments: Any, run: RunState, key: str) -> Any:
        """The tool's result; a failing tool's error is the result (the model's to handle).
        A span under the turn keeps the tool, its arguments, its result and its status."""
        trace = run.trace
        span = trace.begin(f"workflow.{key}.{tool.name}", f"workflow.{key}") if trace else None
        error: BaseException | None = None
        result: Any = None
        try:
            result = await self._dispatch(tool, arguments, run, key)
        except Exception as exc:
            error = exc
            result = {"error": getattr(exc, "message", None) or str(exc) or type(exc).__name__}
        if span is not None:
            RequestTrace.end(span, error)
            span.attributes = {
                "keel.workflow.kind": "tool_call",
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool.name,
                "keel.tool.status": "error" if error is not None else "ok",
                INPUT: arguments,
                OUTPUT: result,
            }
        return result

    async def _dispatch(self, tool: Tool, arguments: Any, run: RunState, key: str) -> Any:
        runtime = self.runtime
        if isinstance(tool, HttpTool):
            headers = secret_headers(tool.http, runtime.environ)
            output = Validator(tool.http.output_schema) if tool.http.output_schema else None
            return await send(
                runtime, tool.http, tool.http.url, headers, arguments, f"{run.run_id}:{key}", output
            )
        if isinstance(tool, KbTool):
            knowledge = runtime.knowledge()
            if knowledge is None:
                raise InvalidRequest("knowledge bases are not available in this server")
            hits = await knowledge.search(
                run.principal.project_id, tool.kb, str(arguments["query"]), tool.top_k
            )
            return [{"text": h.text[:1000], "source": h.source} for h in hits]
        engine, load = runtime.engine, runtime.workflow
        assert engine is not None
        assert load is not None
        workflow = await load(run.principal.project_id, tool.workflow)
        workflow.input.check(arguments, f"the input of workflow {tool.workflow!r}")
        scope: dict[str, Any] = {"input": arguments, "steps": {}}
        last = await engine.steps(workflow.steps, scope, run, f"{key}/", f"workflow.{key}")
        return engine.finish(workflow, scope, last)


def _decision(spec: AgentSpec, body: dict[str, Any]) -> tuple[str | None, Any, str, Any]:
    """(tool name or None for an answer, arguments, the assistant's text, native call)."""
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {}
    native = message.get("tool_calls")
    if native:
        first = native[0]
        function = first.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = function.get("arguments")
        return str(function.get("name")), arguments, "", first
    text = answer_text(body)
    if spec.tool_calling == "grammar" and spec.tools:
        try:
            decided = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None, None, text, None
        if isinstance(decided, dict) and "tool" in decided:
            return str(decided["tool"]), decided.get("arguments"), text, None
        if isinstance(decided, dict) and isinstance(decided.get("answer"), str):
            return None, None, decided["answer"], None
    return None, None, text, None


class Spent:
    """What an agent run has used so far, over every turn."""

    __slots__ = ("cost", "input_tokens", "output_tokens", "tokens")

    def __init__(self) -> None:
        self.tokens, self.input_tokens, self.output_tokens, self.cost = 0, 0, 0, 0.0

    def add(self, record: dict[str, Any]) -> None:
        self.tokens += record["tokens"]
        self.input_tokens += record.get("prompt_tokens", 0)
        self.output_tokens += record.get("completion_tokens", 0)
        self.cost += record.get("cost") or 0.0


def prices(runtime: Runtime, project: str, model: str) -> tuple[float, float]:
    """(input, output) price per million tokens of the dearest target `model` may reach."""
    route = runtime.gateway.route.router.table.lookup(project, model)
    if route is None:
        return 0.0, 0.0
    targets = [*(t for t, _ in route.weighted), *route.fallbacks]
    return (
        max(t.input_price_per_m for t in targets),
        max(t.output_price_per_m for t in targets),
    )


def _stop(
    stopped: str,
    calls: list[dict[str, Any]],
    spent: Spent,
    turns: int,
    text: str,
    answer: str | None = None,
    *,
    reason: str | None = None,
) -> Result:
    output: dict[str, Any] = {
        "answer": answer,
        "stopped": stopped,
        "turns": turns,
        "tool_calls": calls,
        "tokens": spent.tokens,
        "cost_usd": round(spent.cost, 9),
    }
    if reason is not None:
        output["reason"] = reason
    return Result(output, spent.tokens, spent.cost, text, spent.input_tokens, spent.output_tokens)
