"""What tells a person which task is which: its CSV row and the start of its prompt, beside the id.

Labels come from the journal (tasks this machine submitted) or a batch manifest (`prompt_start`).
"""

from __future__ import annotations

from typing import Any, Mapping

from kling_cli.render import one_line

#: characters of the prompt shown beside an id
PROMPT_START = 40


def shorten(text: str, width: int = PROMPT_START) -> str:
    """One line of at most `width` characters: tabs and newlines become spaces (a label sits in a
    tab-separated line), and a cut is marked with an ellipsis."""
    line = one_line(text)
    return line if len(line) <= width else line[:width - 1].rstrip() + "…"


def request_prompt(request: Mapping[str, Any] | None) -> str:
    """The prompt of a request as the journal keeps it (the wire body: aigw nests it under `params`)."""
    if not request:
        return ""
    prompt = request.get("prompt")
    params = request.get("params")
    if not prompt and isinstance(params, Mapping):
        prompt = params.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def row_prompt(values: Mapping[str, str], defaults: Mapping[str, Any]) -> str:
    """A CSV row's prompt: its own cell, else the --prompt every row shares."""
    return (values.get("prompt") or "").strip() or str(defaults.get("prompt") or "")


def label(row: int | str | None, prompt: str | None) -> str:
    """`row 3: a red fox running through…`, or whichever half is known, or ''."""
    start = shorten(prompt or "")
    where = f"row {row}" if row not in (None, "") else ""
    return ": ".join(part for part in (where, start) if part)


def task_labels(refs, entries: Mapping[str, Any]) -> dict[str, str]:
    """Each task's label: from its journal entry (row, prompt), else from the manifest row it came from."""
    labels = {}
    for ref in refs:
        entry = entries.get(ref.id)
        if entry is not None:
            text = label(entry.row, request_prompt(entry.request))
        elif ref.row:
            text = label(ref.row.get("row"), ref.row.get("prompt_start"))
        else:
            text = ""
        if text:
            labels[ref.id] = text
    return labels
