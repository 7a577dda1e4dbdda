"""A workflow's steps as a graph for the console: layers by dependency, drawn as SVG."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

from keel.workflows.expr import Compiler
from keel.workflows.spec import WorkflowSpec
from keel.workflows.validate import order, step_reads

_W, _H, _GAP_X, _GAP_Y = 170, 44, 60, 22
_FILL = {"done": "#e3f6e8", "failed": "#fde2e1", "skipped": "#eeeeee"}


@dataclass(frozen=True)
class Node:
    id: str
    kind: str
    layer: int
    row: int
    needs: tuple[str, ...]


def layout(spec: WorkflowSpec, compiler: Compiler) -> list[Node]:
    nodes: dict[str, Node] = {}
    rows: dict[int, int] = {}
    ids = {s.id for s in spec.steps}
    for step in order(spec.steps, compiler):
        needs = tuple(sorted(step_reads(step, compiler) & ids))
        layer = 1 + max((nodes[n].layer for n in needs if n in nodes), default=-1)
        for other in spec.steps:  # a branch's targets sit after it
            if other.kind == "branch" and other.id in nodes:
                targets = {t for c in other.branch.cases for t in c.then} | set(  # type: ignore[union-attr]
                    other.branch.else_  # type: ignore[union-attr]
                )
                if step.id in targets:
                    layer = max(layer, nodes[other.id].layer + 1)
                    needs = (*needs, other.id)
        row = rows.get(layer, 0)
        rows[layer] = row + 1
        nodes[step.id] = Node(step.id, step.kind, layer, row, needs)
    return list(nodes.values())


def svg(spec: WorkflowSpec, compiler: Compiler, states: dict[str, str] | None = None) -> Markup:
    """The graph; `states` (step id → done/failed/…) colours the steps of one run."""
    nodes = layout(spec, compiler)
    where = {n.id: n for n in nodes}
    width = (max((n.layer for n in nodes), default=0) + 1) * (_W + _GAP_X)
    height = (max((n.row for n in nodes), default=0) + 1) * (_H + _GAP_Y)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="workflow-graph" role="img" '
        f'aria-label="steps of {escape(spec.name)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    ]
    for node in nodes:
        x2, y2 = node.layer * (_W + _GAP_X), node.row * (_H + _GAP_Y) + _H // 2
        for need in node.needs:
            source = where[need]
            x1 = source.layer * (_W + _GAP_X) + _W
            y1 = source.row * (_H + _GAP_Y) + _H // 2
            parts.append(
                f'<line class="edge" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" '
                'stroke="#8a94a6" stroke-width="1.5"/>'
            )
    for node in nodes:
        x, y = node.layer * (_W + _GAP_X), node.row * (_H + _GAP_Y)
        state = (states or {}).get(node.id, "")
        parts.append(
            f'<g class="step {escape(state)}" data-step="{escape(node.id)}">'
            f'<rect x="{x}" y="{y}" width="{_W}" height="{_H}" rx="6" '
            f'fill="{_FILL.get(state, "#f4f6fa")}" stroke="#5b6578"/>'
            f'<text x="{x + 10}" y="{y + 18}" font-size="13" font-weight="600">'
            f"{escape(node.id)}</text>"
            f'<text class="kind" x="{x + 10}" y="{y + 35}" font-size="11" '
            f'fill="#5b6578">{escape(node.kind)}'
            f"{' · ' + escape(state) if state else ''}</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
