"""How many of its tasks a CSV run keeps running on the provider at once.

With `--max-in-flight N` that is N, the account's limit; a "too many running tasks" refusal (Kling 1303)
says the account has fewer slots free than that (another process or person is using some), so the limit
drops to the tasks this run has running, for a while: until as many of them have ended (the account's own
clock: about one run time), or `HOLD` seconds. Then one more is tried; while none is refused the limit
climbs back to N, and each refused try doubles the next wait.

With `--max-in-flight auto` the limit is found: it starts at a few and grows by one each time a submit goes
through with every slot taken, until the first refusal; the tasks running then are the account's limit,
and the run holds there (a later refusal lowers it for a while, as above). Found or not, it is said on
stderr.
"""

from __future__ import annotations

from typing import Callable

#: --max-in-flight auto: where the search starts, and the most it ever keeps running
AUTO_START = 3
AUTO_MAX = 100
#: seconds a refusal holds the limit down at most (scaled like the poll schedule); each refusal in a row
#: doubles the hold, up to MAX_TURNS times as long
HOLD = 300.0
MAX_TURNS = 8


class Slots:
    def __init__(self, ceiling: int | None, *, scale: float = 1.0, say: Callable[[str], None] = lambda _t: None):
        #: None: --max-in-flight auto, still looking for the limit
        self.discovering = ceiling is None
        self.ceiling = AUTO_MAX if ceiling is None else ceiling
        self.limit = min(AUTO_START, self.ceiling) if ceiling is None else ceiling
        self.hold = HOLD / scale
        self.hold_until = 0.0
        #: this run's tasks still to end before the hold is over, and how many turnovers the next hold lasts
        self.hold_ends = 0
        self.turns = 1
        self.refusals = 0
        #: the most of this run's tasks that ran at once
        self.peak = 0
        self.say = say

    def _probing(self, now: float) -> bool:
        return not self.discovering and self.limit < self.ceiling and (self.hold_ends <= 0 or now >= self.hold_until)

    def room(self, own: int, now: float) -> int:
        """How many more of this run's tasks may be started now, with `own` running."""
        return self.limit + (1 if self._probing(now) else 0) - own

    def wake(self, now: float) -> float | None:
        """Seconds until the room grows by itself (a hold ends), if it will."""
        if self.discovering or self._probing(now) or self.limit >= self.ceiling:
            return None
        return self.hold_until - now

    def ended(self) -> None:
        """One of this run's tasks ended."""
        self.hold_ends -= 1

    def sent(self, own: int) -> None:
        """A submit went through: `own` of this run's tasks now run."""
        self.peak = max(self.peak, own)
        if own > self.limit:  # one over the held limit went through: a slot came back
            self.limit, self.turns = own, 1
        if self.discovering and own >= self.limit:
            if self.limit >= self.ceiling:
                self.discovering = False
                self.say(f"--max-in-flight auto: no limit met up to {self.ceiling} tasks at once; running that many")
            else:
                self.limit += 1

    def refused(self, own: int, now: float) -> None:
        """The provider refused a submit as too many running tasks while `own` of this run's were running."""
        self.refusals += 1
        if own <= 0:
            return  # other processes hold every slot: only the row waits
        if self.discovering:
            self.discovering = False
            self.ceiling = self.limit = own
            self.say(f"--max-in-flight auto: the provider refused a task with {own} running: the account's limit "
                     f"is {own}; keeping {own} running")
            return
        probe = own >= self.limit  # one over the limit was tried, and refused: wait longer before the next try
        if probe:
            self.turns = min(self.turns * 2, MAX_TURNS)
        self.limit = min(self.limit, own)
        self.hold_ends = own * self.turns
        self.hold_until = now + self.hold * self.turns

    def finish(self) -> None:
        """At the end of a run still looking for the limit: say how far it got."""
        if self.discovering and self.peak:
            self.say(f"--max-in-flight auto: no refusal with up to {self.peak} tasks at once (the rows ran out "
                     "first); the account's limit is at least that")
