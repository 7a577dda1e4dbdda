"""JUnit XML for any CI system's test report view: one suite of gates (a failed gate is a
failed test) and one suite per run of items (an item that misses a scorer is a failure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from xml.etree import ElementTree as ET

from keel.evals.gates import GateResult


def junit_xml(name: str, gates: Sequence[GateResult], runs: Sequence[dict[str, Any]]) -> str:
    """`runs`: {"id", "title", "items": [{"item_id", "passed", "detail"}]}."""
    root = ET.Element("testsuites", name=f"keel eval {name}")
    suite = ET.SubElement(root, "testsuite", name=f"{name}: gates", tests=str(len(gates)),
                          failures=str(sum(not g.passed for g in gates)))  # fmt: skip
    for result in gates:
        case = ET.SubElement(suite, "testcase", classname=f"{name}.gates", name=result.gate.text)
        if not result.passed:
            ET.SubElement(case, "failure", message=result.message).text = result.message
        else:
            ET.SubElement(case, "system-out").text = result.message
    for run in runs:
        items = run["items"]
        suite = ET.SubElement(root, "testsuite", name=f"{name}: {run['title']}",
                              tests=str(len(items)),
                              failures=str(sum(not i["passed"] for i in items)))  # fmt: skip
        for item in items:
            case = ET.SubElement(suite, "testcase", classname=f"{name}.{run['id']}",
                                 name=f"item {item['item_id']}")  # fmt: skip
            if not item["passed"]:
                ET.SubElement(case, "failure", message=item["detail"][:500]).text = item["detail"]
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
