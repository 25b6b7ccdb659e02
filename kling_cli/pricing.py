"""Cost before paying: the price table (`prices.json`, data beside this module) and estimates from it.

Each provider bills in its own unit (Kling `units`, aigw `points`, a reseller's currency). An estimate
looks the request up by kind, model, mode and duration, with the provider's documented defaults for what
the request leaves out; where no public source gives a price it is unknown, never guessed. What a task
really cost is what the provider reports (`Task.cost`): estimates are for before paying, and for
comparing against the bill afterwards.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from kling_cli.errors import UsageError
from kling_cli.models import Cost, to_number

#: the provider preset whose prices the sandbox reports, by the dialect it speaks
_SANDBOX_PRICES = {"kling": "kling", "cometapi": "cometapi", "newapi": "ezmodel", "acedata": "acedata",
                   "aigw": "aigw"}


@lru_cache(maxsize=1)
def table() -> dict[str, Any]:
    return json.loads(resources.files("kling_cli").joinpath("prices.json").read_text(encoding="utf-8"))


def billing_provider(provider: str | None, dialect: str | None) -> str | None:
    """Whose price list applies: the provider's own; the sandbox bills like the provider it emulates;
    a custom gateway has prices of its own that nobody published here."""
    if provider == "sandbox":
        return _SANDBOX_PRICES.get(dialect or "")
    return provider if provider in table()["providers"] else None


def unit_of(provider: str | None, dialect: str | None) -> str | None:
    key = billing_provider(provider, dialect)
    return table()["providers"][key]["unit"] if key else None


def dims(body: dict[str, Any]) -> tuple[str | None, str | None, int | None]:
    """(model, mode, duration) of a submit body as sent on the wire (or as the journal keeps it): every
    dialect names them `model_name`/`model`, `mode` and `duration`, at the top or under `params` (aigw)."""
    params = body.get("params") if isinstance(body.get("params"), dict) else {}

    def pick(*names: str) -> Any:
        for name in names:
            for where in (body, params):
                if where.get(name) not in (None, ""):
                    return where[name]
        return None

    model, mode = pick("model_name", "model"), pick("mode")
    seconds = to_number(pick("duration"))
    return (str(model) if model is not None else None, str(mode) if mode is not None else None,
            int(seconds) if seconds is not None and seconds.is_integer() else None)


@dataclass
class Estimate:
    #: None when no public source gives a price for this request
    cost: Cost | None
    unit: str | None
    source: str | None = None
    #: what was looked up: "kling-v1 std 5 s"
    what: str = ""

    def text(self) -> str:
        if self.cost is not None:
            return f"{self.cost.amount:g} {self.cost.unit}"
        return f"unknown ({self.what})" if self.what else "unknown"


def with_defaults(provider: str | None, dialect: str | None, kind: str,
                  body: dict[str, Any]) -> tuple[str | None, str | None, int | None]:
    """`dims`, with what the provider documents for what the request leaves out (official API: kling-v1,
    std, 5 s)."""
    key = billing_provider(provider, dialect)
    defaults = table()["providers"][key].get("defaults", {}).get(kind, {}) if key else {}
    model, mode, duration = dims(body)
    return (model or defaults.get("model"), mode or defaults.get("mode"),
            duration if duration is not None else defaults.get("duration"))


def estimate(provider: str | None, dialect: str | None, kind: str, body: dict[str, Any]) -> Estimate:
    key = billing_provider(provider, dialect)
    if key is None:
        return Estimate(None, None, what=f"no price list for provider {provider}")
    entry = table()["providers"][key]
    model, mode, duration = with_defaults(provider, dialect, kind, body)
    what = " ".join(str(part) for part in (kind, model, mode, f"{duration} s" if duration else None) if part)
    for price in entry["prices"]:
        if (price["kind"], price["model"], price["duration"]) == (kind, model, duration) \
                and price["mode"] in ("*", mode):
            return Estimate(Cost(float(price["amount"]), entry["unit"]), entry["unit"], price["source"], what)
    return Estimate(None, entry["unit"], what=what)


@dataclass
class Totals:
    """Sums per unit, and how many amounts were unknown."""

    sums: dict[str, float] = field(default_factory=dict)
    unknown: int = 0

    def add(self, cost: Cost | None) -> None:
        if cost is None:
            self.unknown += 1
        else:
            self.sums[cost.unit] = self.sums.get(cost.unit, 0.0) + cost.amount

    def text(self, unknown: str = "unknown") -> str:
        """`12 units, 3 unknown`; `unknown` names what the uncounted amounts are."""
        parts = [f"{amount:g} {unit}" for unit, amount in sorted(self.sums.items())]
        if self.unknown:
            parts.append(f"{self.unknown} {unknown}")
        return ", ".join(parts) or "nothing"


_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_budget(text: str, unit: str | None) -> Cost:
    """`--max-cost 100`, `100units`, `"25 USD"`: the unit, when given, must be the one the provider bills in."""
    match = _BUDGET.match(text or "")
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"--max-cost {text!r}: expected an amount and its unit, e.g. 100units or '40 points'")
    given = match.group(2)
    if unit is None:
        raise UsageError("--max-cost: this profile's provider has no price list, so its cost cannot be counted",
                         hint="see the README's price table; run without --max-cost")
    if given and given.lower().rstrip("s") != unit.lower().rstrip("s"):
        raise UsageError(f"--max-cost {text!r}: this provider bills in {unit}, not {given}",
                         hint=f"e.g. --max-cost {match.group(1)}{unit}")
    return Cost(float(match.group(1)), unit)
