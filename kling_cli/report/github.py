"""GitHub Actions: Markdown for the step summary, and workflow commands that annotate the run.

Failed, refused and invalid rows become `::error::`, uncertain and unfinished ones `::warning::`.
"""

from __future__ import annotations

from kling_cli.report import Record, cost_line, counts
from kling_cli.report.junit import verdict


def _cell(text: object) -> str:
    """A Markdown table cell: one line, no column breaks, no markup from the data."""
    value = " ".join(str(text).split())
    for char in "\\|*_`[]<>":
        value = value.replace(char, "\\" + char)
    return value


def summary(records: list[Record], *, title: str = "kling report") -> str:
    lines = [f"## {title}", "", "| status | tasks |", "|---|---:|"]
    lines += [f"| {_cell(status)} | {count} |" for status, count in counts(records).items()]
    lines.append(f"| **total** | **{len(records)}** |")
    line = _cell(cost_line(records))
    lines += ["", line[:1].upper() + line[1:] + "."]
    bad = [r for r in records if verdict(r) is not None]
    if bad:
        lines += ["", "### Not succeeded", "", "| row | task | status | reason |", "|---|---|---|---|"]
        for record in bad:
            lines.append(f"| {_cell(record.name)} | {_cell(record.task_id or '-')} | {_cell(record.status)} | "
                         f"{_cell(verdict(record)[2])} |")
    return "\n".join(lines) + "\n"


def _escape(text: str, *, prop: bool = False) -> str:
    # GitHub's escaping of workflow command data (and, in properties, of ':' and ',')
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def commands(records: list[Record]) -> list[str]:
    lines = []
    for record in records:
        found = verdict(record)
        if found is None:
            continue
        element, _kind, message = found
        level = "error" if element == "failure" or record.status == "error" else "warning"
        where = f" task {record.task_id}" if record.task_id else ""
        lines.append(f"::{level} title={_escape('kling ' + record.name, prop=True)}::"
                     f"{_escape(record.name + where + ': ' + message)}")
    return lines
