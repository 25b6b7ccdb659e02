"""What every command shares: the global options (accepted before or after the subcommand), the
context built once per run, and the single error boundary that turns errors into exit codes.
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass, fields
from typing import Annotated, Any, Callable, Optional, get_type_hints

import typer

from kling_cli import envvars
from kling_cli.errors import ExitCode, Interrupted, KlingError, UsageError
from kling_cli.render import Output, isatty


@dataclass
class Options:
    profile: Optional[str] = None
    json: bool = False
    quiet: int = 0
    verbose: int = 0
    no_color: bool = False
    no_input: bool = False
    raw: bool = False
    dialect: Optional[str] = None
    no_journal: bool = False
    journal: Optional[str] = None

    def merged(self, later: Options) -> Options:
        """Options given after the subcommand win over (or add to) those given before it."""
        return Options(
            profile=later.profile if later.profile is not None else self.profile,
            json=self.json or later.json,
            quiet=self.quiet + later.quiet,
            verbose=self.verbose + later.verbose,
            no_color=self.no_color or later.no_color,
            no_input=self.no_input or later.no_input,
            raw=self.raw or later.raw,
            dialect=later.dialect or self.dialect,
            no_journal=self.no_journal or later.no_journal,
            journal=later.journal or self.journal,
        )


def rule(name: str, **limits: Any) -> Callable[[Any], Any]:
    """A Typer callback applying `kling_cli.rules.<name>` to an option's value: the rules a profile or a CSV
    cell follows, so a flag is checked the same way (exit 2, the option named)."""

    def callback(value: Any) -> Any:
        if value is None:
            return None
        from kling_cli import rules

        try:
            return getattr(rules, name)(value, **limits)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None

    return callback


IntervalOpt = Annotated[Optional[float], typer.Option("--interval", callback=rule("poll_interval"), help="Poll every "
                                                      "S seconds, 0.5-3600 (default: 2 s growing to 30 s).",
                                                      show_default=False)]

ProfileOpt = Annotated[
    Optional[str],
    typer.Option("--profile", "-p", help="Profile to use (else $KLING_PROFILE, else default_profile). "
                 "'sandbox' is built in and needs no key.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object per line on stdout, errors included.")]
QuietOpt = Annotated[int, typer.Option("--quiet", "-q", count=True, show_default=False,
                                       help="Less on stderr; -qq hides warnings too.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, show_default=False,
                                         help="Explain where settings came from; -vv logs each HTTP request.")]
NoColorOpt = Annotated[bool, typer.Option("--no-color", help="No colour (also NO_COLOR=1 or TERM=dumb).")]
NoInputOpt = Annotated[bool, typer.Option("--no-input", help="Never prompt (always so when stdin is not a terminal).")]
RawOpt = Annotated[bool, typer.Option("--raw", help="Include the provider's own payload as `raw` in --json output.")]
NoJournalOpt = Annotated[bool, typer.Option("--no-journal", help="Do not record tasks in the local journal (also "
                                            "KLING_NO_JOURNAL=1); a lost answer then cannot be reconciled.")]
JournalOpt = Annotated[Optional[str], typer.Option(
    "--journal", metavar="URL", help="The journal: a file path or sqlite:///path (default: journal.db in the data "
    "directory), or postgresql://user@host/db, shared by many machines (also $KLING_JOURNAL).", show_default=False)]
DialectOpt = Annotated[
    Optional[str],
    typer.Option("--dialect", help="With --profile sandbox: which provider dialect the sandbox speaks "
                 "(kling, cometapi, newapi, acedata, aigw).", show_default=False),
]

_COMMON = {"profile": ProfileOpt, "json": JsonOpt, "quiet": QuietOpt, "verbose": VerboseOpt,
           "no_color": NoColorOpt, "no_input": NoInputOpt}
_TASK = {"raw": RawOpt, "dialect": DialectOpt, "no_journal": NoJournalOpt, "journal": JournalOpt}
_JOURNAL = {"journal": JournalOpt}
_DEFAULTS = {f.name: f.default for f in fields(Options)}


class AppContext:
    """Built once per run: options, output, and the profile and service, resolved on first use."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.out = Output(json_mode=opts.json, quiet=opts.quiet, verbose=opts.verbose, no_color=opts.no_color,
                          raw=opts.raw)
        self._resolved = None
        self._config = None
        self._service = None
        self._journal = None
        self._journal_failed = False
        #: (profile, dialect) the followed tasks were submitted with, from the journal
        self._journal_place: tuple[str, str] | None = None
        #: journal entries of the tasks this run follows, by task id
        self.entries: dict[str, Any] = {}
        #: ids of tasks that keep running remotely if this run is interrupted
        self.running: list[str] = []
        #: the external id of a submit whose answer has not come back yet
        self.submitting: str | None = None

    @property
    def no_input(self) -> bool:
        return self.opts.no_input or bool(os.environ.get(envvars.NO_INPUT)) or not isatty(sys.stdin)

    @property
    def stdin_is_tty(self) -> bool:
        return isatty(sys.stdin)

    def resolved(self):
        if self._resolved is None:
            from kling_cli.config import load_config, resolve
            from kling_cli.presets import SANDBOX_PROFILE

            self._config = config = load_config(warn=self.out.warn)
            profile, dialect, place = self.opts.profile, self.opts.dialect, self._journal_place
            from_journal = []
            if place is not None and (place[0] == SANDBOX_PROFILE or place[0] in config.profiles):
                if profile is None:
                    profile = place[0]
                    from_journal.append("profile")
                if profile == place[0] == SANDBOX_PROFILE and dialect is None:
                    dialect = place[1]
                    from_journal.append("dialect")
            self._resolved = resolve(profile, dialect_flag=dialect, config=config, warn=self.out.warn)
            for key in from_journal:
                self._resolved.sources[key] = "from the journal: the task was submitted with it"
            self.out.secrets.extend(self._resolved.credentials.secrets())
            for line in self._resolved.explain():
                self.out.debug(line)
        return self._resolved

    def journal_spec(self) -> str:
        """Which journal: --journal, else $KLING_JOURNAL, else the file in the data directory."""
        from kling_cli.config import data_dir
        from kling_cli.journal import FILENAME, masked, password

        spec = self.opts.journal or os.environ.get(envvars.JOURNAL) or str(data_dir() / FILENAME)
        secret = password(spec)
        if secret:
            self.out.secrets.append(secret)
        self.out.debug(f"journal: {masked(spec)}")
        return spec

    def suggest(self, *words: str) -> str:
        """A `kling` command line to paste in this shell: the profile (and the sandbox's dialect) are named
        when this shell would not pick them by itself."""
        line = ["kling"]
        resolved, config = self._resolved, self._config
        if resolved is not None and config is not None:
            from kling_cli.config import DEFAULT_SANDBOX_DIALECT

            if resolved.profile != (os.environ.get(envvars.PROFILE) or config.default_profile):
                line += ["--profile", resolved.profile]
            if resolved.sandbox and resolved.dialect != config.sandbox.get("dialect", DEFAULT_SANDBOX_DIALECT):
                line += ["--dialect", resolved.dialect]
        import shlex

        return shlex.join(line + [str(word) for word in words])

    def follow(self, task_ids: list[str]) -> dict[str, Any]:
        """What the journal knows of these tasks (those this machine submitted), by id. Unless --profile
        names one, the profile (and sandbox dialect) they were submitted with is the one used."""
        journal = self.journal()
        if journal is None:
            return {}
        try:
            for task_id in task_ids:
                entry = journal.find_task(task_id)
                if entry is not None:
                    self.entries[task_id] = entry
        except Exception as exc:  # reading the journal is best-effort
            self.out.warn(f"journal: cannot read it ({exc}); going on without it")
            return {}
        places: dict[tuple[str, str], int] = {}
        for entry in self.entries.values():
            places[(entry.profile, entry.dialect)] = places.get((entry.profile, entry.dialect), 0) + 1
        if len(places) > 1 and self.opts.profile is None:
            listed = ", ".join(f"{n} on profile {p} ({d} dialect)" for (p, d), n in places.items())
            raise UsageError(f"these tasks were submitted with different profiles: {listed}",
                             hint="follow one profile's tasks at a time, naming it with --profile (and --dialect "
                             "for the sandbox)")
        if len(places) == 1:
            (self._journal_place,) = places
        return self.entries

    def entry(self, task_id: str):
        """The journal's entry for a task, if this machine submitted it (best-effort)."""
        if task_id not in self.entries:
            journal = self.journal()
            try:
                found = journal.find_task(task_id) if journal is not None else None
            except Exception:
                found = None
            if found is None:
                return None
            self.entries[task_id] = found
        return self.entries[task_id]

    def journal(self, *, required: bool = False):
        """The journal, or None when it is turned off. Opening it may fail: fatal before a submit (its intent
        must be recorded first), a warning anywhere else."""
        if self.opts.no_journal or os.environ.get(envvars.NO_JOURNAL, "") not in ("", "0"):
            if self.opts.journal:
                raise UsageError("--journal and --no-journal contradict each other: give one")
            if required:
                self.out.warn("journal off: a lost answer cannot be reconciled, and a rerun of a CSV batch cannot "
                              "tell which rows were already paid for")
            return None
        if self._journal is not None:
            return self._journal
        if self._journal_failed and not required:
            return None
        from kling_cli.journal import JournalError, open_journal

        try:
            self._journal = open_journal(self.journal_spec())
        except JournalError as exc:
            if required:
                raise JournalError(f"{exc.message}; nothing was sent", hint=exc.hint) from None
            self.out.warn(f"journal: {exc.message}; going on without it")
            self._journal_failed = True
        return self._journal

    def service(self, *, journal_required: bool = False):
        if self._service is None:
            from kling_cli.service import Service

            resolved = self.resolved()
            self._service = Service(resolved, self.out, journal=self.journal(required=journal_required))
        return self._service

    def close(self) -> None:
        if self.out.ephemeral_printed:
            self.out.info("sandbox: the video URLs above are served by this kling process and stop working when it "
                          f"exits; `{self.suggest('download', 'ID')}` fetches a video later (the sandbox of "
                          "kling sandbox serve keeps its URLs while it runs)")
        if self._service is not None:
            self._service.close()  # and the journal it was given
        elif self._journal is not None:
            self._journal.close()


def run_guarded(ctx: AppContext, body: Callable[[], Any]) -> Any:
    """The error boundary: every expected failure becomes one stderr line (or a JSON error) and an exit code."""
    try:
        result = body()
    except KlingError as exc:
        ctx.out.error(exc)
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt:
        ids = list(dict.fromkeys(ctx.running))
        if ctx.submitting:
            err = Interrupted(f"interrupted while a submit was under way: the task may exist (external id "
                              f"{ctx.submitting})",
                              hint="the journal keeps the submit as pending (`kling history`); check before "
                              "submitting again", extra={"external_id": ctx.submitting, "task_ids": ids})
        elif ids:
            err = Interrupted(f"interrupted; still running remotely: {' '.join(ids)}",
                              hint=f"follow up with `{ctx.suggest('wait', *ids)}`", extra={"task_ids": ids})
        else:
            err = Interrupted("interrupted")
        ctx.out.error(err)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except typer.Exit:
        raise
    except BrokenPipeError:
        # the reader of stdout went away (`| head`): stop quietly, like any Unix filter
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None
    except Exception as exc:
        if os.environ.get(envvars.DEBUG):
            raise
        ctx.out.error(KlingError(
            f"unexpected {type(exc).__name__}: {exc}",
            hint="this is a bug: re-run with KLING_DEBUG=1 to see the traceback, and report it",
            code="internal",
        ))
        raise typer.Exit(int(ExitCode.ERROR)) from None
    finally:
        ctx.close()
    if isinstance(result, int) and result:
        raise typer.Exit(result)
    return result


def _keyword(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def command(app: typer.Typer, name: str, *, task_options: bool = False, journal_option: bool = False,
            groups: dict[str, type] | None = None, **kwargs: Any) -> Callable:
    """Register `fn(ctx: AppContext, ...)` as a command that also accepts the global options.

    The function's own parameters are Typer parameters; the global ones are appended to its signature,
    merged with those given before the subcommand, and handed over as an `AppContext`. Each of `groups`
    names a parameter of `fn` and a dataclass whose fields (typed with Typer's Annotated options) are
    options several commands share: they are appended too, and handed over as one instance.
    """
    groups = groups or {}

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn, eval_str=True)
        own = [p for p in list(signature.parameters.values())[1:] if p.name not in groups]
        shared = {**_COMMON, **(_TASK if task_options else _JOURNAL if journal_option else {})}
        extra = []
        for cls in groups.values():
            hints = get_type_hints(cls, include_extras=True)
            extra += [_keyword(f.name, hints[f.name], f.default) for f in fields(cls)]
        extra.append(_keyword("typer_context", typer.Context))
        extra += [_keyword(key, annotation, _DEFAULTS[key]) for key, annotation in shared.items()]

        def wrapper(**values: Any) -> Any:
            typer_context: typer.Context = values.pop("typer_context")
            for group, cls in groups.items():
                values[group] = cls(**{f.name: values.pop(f.name) for f in fields(cls)})
            local = Options(**{key: values.pop(key) for key in shared})
            root = typer_context.find_root().obj
            opts = root.merged(local) if isinstance(root, Options) else local
            ctx = AppContext(opts)
            return run_guarded(ctx, lambda: fn(ctx, **values))

        wrapper.__signature__ = signature.replace(parameters=own + extra)  # type: ignore[attr-defined]
        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        app.command(name, **kwargs)(wrapper)
        return fn

    return register
