"""Agents: a model and its tools in a function-calling loop, through `Gateway.handle`.

Each turn the model either calls one tool or answers. With `tool_calling: grammar` the
model answers JSON decoded under a grammar built from the tools' schemas (llama.cpp reads
`response_format.schema`), so a call names a real tool with arguments of the right shape
by construction; arguments are validated against the tool's schema either way. The loop
stops at an answer, at `max_turns`, when a call repeats one already made (same tool, same
arguments: a loop) or before a turn that could take it past its token budget. Each turn is
checkpointed, so a resumed run replays finished turns instead of calling tools again.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from keel.calls import Call
from keel.errors import InvalidRequest
from keel.gateway.answer import Answer
from keel.workflows.compiled import Validator
from keel.workflows.engine import Result, RunState
from keel.workflows.runtime import Runtime
from keel.workflows.spec import AgentSpec, HttpTool, KbTool, WorkflowTool
from keel.workflows.steps.http import secret_headers, send
from keel.workflows.steps.llm import answer_text, call_id, metadata, usage_tokens
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
        tokens, last_prompt = 0, 0
        budget = spec.budget.tokens
        for turn in range(spec.max_turns):
            turn_key = f"{key}.turn{turn}"
            saved = run.checkpoints.get(turn_key)
            if saved is not None and saved.status == "done":
                record = saved.output
            else:
                if budget is not None:
                    pending = sum(len(str(m.get("content") or "")) for m in messages[-2:]) // 3
                    if tokens + last_prompt + pending + spec.max_tokens > budget:
                        return _stop("budget", calls, tokens, turn)
                started = time.time_ns()
                record = await self._turn(spec, tools, messages, run, key, turn_key, seen)
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
                        )
                    )
            tokens += record["tokens"]
            last_prompt = record.get("prompt_tokens", 0)
            messages += record["messages"]
            if record.get("call") is not None:
                calls.append(record["call"])
                seen.add((record["call"]["tool"], _canonical(record["call"]["arguments"])))
            if record["stop"] is not None:
                return _stop(record["stop"], calls, tokens, turn + 1, record.get("answer"))
        return _stop("max_turns", calls, tokens, spec.max_turns)

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
        usage = answer.body.get("usage") or {}
        record: dict[str, Any] = {
            "tokens": used,
            "prompt_tokens": usage.get("prompt_tokens", 0),
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
        trace = run.trace
        span = (
            trace.begin(f"workflow.{key}.{tool.name}", f"workflow.{key.rsplit('.', 1)[0]}")
            if trace is not None
            else None
        )
        error: BaseException | None = None
        try:
            return await self._dispatch(tool, arguments, run, key)
        except Exception as exc:  # a failing tool is the model's to handle, as a result
            error = exc
            return {"error": getattr(exc, "message", None) or str(exc) or type(exc).__name__}
        finally:
            if span is not None:
                trace.end(span, error)  # type: ignore[union-attr]

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


def _stop(
    reason: str, calls: list[dict[str, Any]], tokens: int, turns: int, answer: str | None = None
) -> Result:
    return Result(
        {
            "answer": answer,
            "stopped": reason,
            "turns": turns,
            "tool_calls": calls,
            "tokens": tokens,
        },
        tokens,
    )
