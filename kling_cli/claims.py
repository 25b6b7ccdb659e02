"""One submit per external id, however many processes try: claims taken in the journal, and what a
process does when it finds a claim that is not its own.

A claim (see `Journal.claim`) lasts from just before a submit until its task id is recorded. The process
that wins sends; the others *follow*: they poll the journal until the winner records the task id (then
they treat the task as their own: wait, download, list it) or gives the claim up without one (then they
claim it themselves). A claim whose process is gone is taken over only through the reconcile path below:
the earlier submit is looked up by its external id, and where the provider cannot be asked it becomes
`uncertain`. Nothing is ever sent blind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from kling_cli.errors import SubmitUncertain, UsageError
from kling_cli.journal import HELD, KNOWN, Entry, JournalError
from kling_cli.journal.owner import Owner
from kling_cli.models import SubmitRequest, Task

if TYPE_CHECKING:
    from kling_cli.service import Service

#: seconds between two looks at a followed claim: a claim lasts one submit, so its task id comes soon
FOLLOW_POLL = 0.2
#: what `recover` says when the earlier submit provably created nothing, or cannot be known about
ABSENT, UNKNOWN = "absent", "unknown"

_owner: Owner | None = None


def this_process() -> Owner:
    global _owner
    if _owner is None:
        _owner = Owner.this_process()
    return _owner


def recover(service: Service, kind: str, entry: Entry) -> Task | str:
    """An earlier submit of a claimed external id left `entry` without a task id (its answer was lost, or its
    process died while sending). Find its task by the external id where the provider can (the entry is then
    `submitted`); if the provider has no such task the entry ends `refused` and the caller may send
    (ABSENT); where the provider cannot be asked, or its answer proves nothing, UNKNOWN: the caller must not send it again on its own."""
    journal = service.journal
    if not service.dialect.lookup_by_external_id:
        return UNKNOWN
    found = service.find_by_external_id(kind, entry.external_id)
    if found is None and not service.dialect.lookup_miss_is_absence:
        return UNKNOWN  # this provider's lookup may miss a task it has: not proof that nothing was created
    if found is None:
        journal.record_state(entry.id, "refused", "never created: the provider has no task with its external id")
        return ABSENT
    journal.record_submitted(entry.id, found)
    return found


def _known(service: Service, kind: str, req: SubmitRequest, entry: Entry) -> Task:
    """An external id that already names a task of this profile. Not every provider refuses a reused id, so
    the journal decides: the same request is that task, and another request under the id is refused."""
    from kling_cli.service import request_hash

    _wire, record = service.wire_request(kind, req)
    if entry.kind == kind and entry.request_hash == request_hash(kind, record):
        service.out.warn(f"external id {entry.external_id} already names task {entry.task_id}, submitted with the "
                         "same request: not sent again")
        return entry.to_task()
    raise UsageError(f"external id {entry.external_id} already names task {entry.task_id}, made from another "
                     "request: nothing sent", code="external_id_taken", hint="use another --external-id for a new video")


def submit_once(service: Service, kind: str, req: SubmitRequest, *,
                say: Callable[[str], None] = lambda _m: None) -> Task:
    """A single submit with the user's own external id, claimed like a CSV row: a second `kling` given the same
    id while the first is sending follows the first's task instead of paying again, and one whose earlier
    try lost its answer is reconciled first. An id that already names a recorded task is never sent again:
    with the same request it is that task (a rerun of the same step); with another it is refused."""
    journal = service.journal
    profile = service.resolved.profile
    owner = this_process()
    external_id = req.external_id or ""
    announced = False
    while True:
        claim = journal.claim(profile, external_id, owner)
        if claim.state == KNOWN:
            return _known(service, kind, req, claim.entry)
        if claim.state != HELD:
            break
        if not announced:
            say(f"external id {external_id} is being submitted by {claim.holder}: waiting for its task id")
            announced = True
        while True:
            service.sleep(FOLLOW_POLL)
            seen = journal.watch(profile, [external_id], owner)[external_id]
            if seen.entry is not None:
                return seen.entry.to_task()
            if not seen.held:
                break
    try:
        if claim.entry is not None:
            found = recover(service, kind, claim.entry)
            if isinstance(found, Task):
                say(f"external id {external_id} was submitted before: found it as task {found.id}")
                return found
            if found == UNKNOWN:
                journal.record_state(claim.entry.id, "uncertain", claim.entry.error)
                raise SubmitUncertain(
                    f"external id {external_id} was submitted before and its answer was lost; the provider cannot "
                    "be asked whether it created the task, so it is not sent again",
                    hint="`kling history --status uncertain` lists it; use another --external-id to pay again")
        return service.submit(kind, req)
    finally:
        try:
            journal.release(profile, external_id, owner)
        except JournalError:
            pass  # the claim ends with this process anyway; the submit's answer must not be lost to it
