"""JUnit XML, as CI systems read it (the common `junit-10` shape: testsuites > testsuite > testcase).

One testcase per row or task. A task that failed, a row the provider refused and an invalid row are
failures; a task that had not ended (timed out), an uncertain row and a query that failed are errors.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone

from kling_cli.report import UNFINISHED, Record

FAILURES = ("failed", "refused", "invalid")
ERRORS = ("uncertain", "error") + UNFINISHED


def verdict(record: Record) -> tuple[str, str, str] | None:
    """(element, type, message) for a record that did not succeed; None for one that did."""
    if record.status == "succeeded":
        return None
    reason = record.error or "no reason given"
    if record.status in FAILURES:
        return "failure", record.status, f"{record.status}: {reason}"
    if record.status in UNFINISHED:
        return "error", "timeout", f"not finished when the report was written (status {record.status})"
    return "error", record.status, f"{record.status}: {reason}"


def render(records: list[Record], *, name: str = "kling") -> bytes:
    suite = ET.Element("testsuite", name=name)
    failures = errors = 0
    total = 0.0
    for record in records:
        case = ET.SubElement(suite, "testcase", name=record.name, classname=f"kling.{record.kind or 'task'}")
        seconds = record.seconds
        case.set("time", f"{seconds or 0.0:.3f}")
        total += seconds or 0.0
        found = verdict(record)
        if found is not None:
            element, kind, message = found
            failures += element == "failure"
            errors += element == "error"
            node = ET.SubElement(case, element, message=message, type=kind)
            node.text = "\n".join(f"{key}: {value}" for key, value in (
                ("task", record.task_id), ("external id", record.external_id), ("status", record.status),
                ("reason", record.error), ("prompt", record.prompt)) if value)
        details = [f"task {record.task_id}" if record.task_id else "no task"]
        details += [f"video {record.video_url}"] if record.video_url else []
        ET.SubElement(case, "system-out").text = "\n".join(details)
    counts = {"tests": str(len(records)), "failures": str(failures), "errors": str(errors), "time": f"{total:.3f}"}
    for key, value in counts.items():
        suite.set(key, value)
    suite.set("skipped", "0")
    suite.set("timestamp", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
    root = ET.Element("testsuites", name=name, **counts)
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
