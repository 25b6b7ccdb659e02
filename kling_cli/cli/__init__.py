"""The `kling` command: registers the command modules and runs the app.

Only Typer and kling's own light modules are imported at start-up; a command group's module only when that
group runs (or when `app`, the whole tree, is asked for); httpx, rich, the dialects and the sandbox inside
the commands that use them.
"""

from __future__ import annotations

import copy
import importlib
import sys
from typing import Annotated, Optional, Sequence

import typer

from kling_cli import __version__
# Importing registers the commands; `tasks` first, so that --help lists them in the order they are used.
from kling_cli.cli import tasks  # noqa: F401, I001
from kling_cli.cli import history, report  # noqa: F401
from kling_cli.cli._app import app as _root
from kling_cli.cli._common import (
    DialectOpt,
    JournalOpt,
    JsonOpt,
    NoColorOpt,
    NoInputOpt,
    NoJournalOpt,
    Options,
    ProfileOpt,
    QuietOpt,
    RawOpt,
    VerboseOpt,
)
from kling_cli.errors import ExitCode

#: the command groups, each registered by importing its module: only when it is run (the listing of
#: `kling --help` takes a group's help text from `_app`), or when the whole tree is asked for (`app`)
_GROUPS = ("submit", "profile", "sandbox", "callback")


def _load(names: Sequence[str] = _GROUPS) -> None:
    for name in names:
        importlib.import_module(f"kling_cli.cli.{name}")


def __getattr__(name: str):
    if name == "app":  # the whole command tree (completions, help tests): every group registered
        _load()
        return _root
    raise AttributeError(name)


def _print_version(value: bool) -> None:
    if value:
        print(f"kling-cli {__version__}")
        raise typer.Exit(0)


@_root.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = None,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = 0,
    verbose: VerboseOpt = 0,
    no_color: NoColorOpt = False,
    no_input: NoInputOpt = False,
    raw: RawOpt = False,
    dialect: DialectOpt = None,
    no_journal: NoJournalOpt = False,
    journal: JournalOpt = None,
) -> None:
    ctx.obj = Options(profile=profile, json=json, quiet=quiet, verbose=verbose, no_color=no_color,
                      no_input=no_input, raw=raw, dialect=dialect, no_journal=no_journal, journal=journal)


def _usage_error(exc: Exception, args: Sequence[str]) -> int:
    """Typer's parse errors, rendered like every other error (JSON with --json)."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    context = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":
        sys.stderr.write(message + "\n")
        return int(ExitCode.USAGE)
    where = context.command_path if context is not None else "kling"
    hint = _quote_tip(message, context, args) or f"see `{where} --help`"
    code = getattr(exc, "exit_code", int(ExitCode.USAGE))
    if "--json" in args:
        import json

        sys.stdout.write(json.dumps({"error": {"code": "usage", "message": message, "hint": hint}}) + "\n")
    else:
        sys.stderr.write(f"kling: error: {message}\nhint: {hint}\n")
    return code


def _quote_tip(message: str, context, args: Sequence[str]) -> str | None:
    """`kling submit t2v a red fox`: the shell split the prompt into words; say how to quote it."""
    import shlex

    prompt = context.params.get("prompt") if context is not None else None
    extra = message.partition("unexpected extra argument(s) (")[2].rstrip(")").split()
    if not isinstance(prompt, str) or not extra:
        return None
    words = list(args)
    start = next((i for i, word in enumerate(words) if word == prompt and words[i + 1:i + 1 + len(extra)] == extra),
                 None)
    if start is None:
        return None
    words[start:start + 1 + len(extra)] = [" ".join([prompt, *extra])]
    return f"a prompt of several words goes in quotes: `{shlex.join(['kling', *words])}`"


#: options of the root command that take a value (so that value is not mistaken for a command name)
_ROOT_VALUE_OPTIONS = ("--profile", "-p", "--dialect", "--journal")


def _first_command(args: Sequence[str]) -> int | None:
    """The index of the first command name in `args`, skipping options and their values."""
    skip = False
    for index, arg in enumerate(args):
        if skip:
            skip = False
        elif arg in _ROOT_VALUE_OPTIONS:
            skip = True
        elif arg == "--":
            return None
        elif not arg.startswith("-"):
            return index
    return None


def _listing(typer_app: typer.Typer) -> typer.Typer:
    """A copy whose commands keep their names and help texts but no parameters: all that help at this level
    shows (building every command's parameters is most of what `kling --help` costs)."""

    def stub(info):
        bare = copy.copy(info)
        callback = info.callback

        def command() -> None:  # never run: a command name on the line selects the real tree
            raise AssertionError("a listing stub was invoked")

        command.__doc__ = callback.__doc__ if callback is not None else None
        bare.callback = command
        return bare

    def group(info):
        bare = copy.copy(info)
        bare.typer_instance = copy.copy(info.typer_instance)
        bare.typer_instance.registered_commands = []
        bare.typer_instance.registered_groups = []
        return bare

    listed = copy.copy(typer_app)
    listed.registered_commands = [stub(info) for info in typer_app.registered_commands]
    listed.registered_groups = [group(info) for info in typer_app.registered_groups]
    return listed


def _is_command(name: str) -> bool:
    return any(info.name == name for info in _root.registered_commands)


def only_invoked(typer_app: typer.Typer, args: Sequence[str]) -> typer.Typer:
    """A copy of the app holding only the branch that `args` runs.

    Typer builds the parameters of every command at each start (about 8 ms for kling's tree); a run needs
    one, and help at a level needs only the names and help texts of that level's commands.
    """
    index = _first_command(args)
    if index is None:
        return _listing(typer_app)
    name = args[index]
    pruned = copy.copy(typer_app)
    for info in typer_app.registered_commands:
        if info.name == name:
            pruned.registered_commands, pruned.registered_groups = [info], []
            return pruned
    for group in typer_app.registered_groups:
        if group.name == name:
            branch = copy.copy(group)
            branch.typer_instance = only_invoked(group.typer_instance, args[index + 1:])
            pruned.registered_commands, pruned.registered_groups = [], [branch]
            return pruned
    return typer_app


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    index = _first_command(args)
    if index is not None:
        name = args[index]
        _load([name] if name in _GROUPS else () if _is_command(name) else _GROUPS)
    command = typer.main.get_command(only_invoked(_root, args))
    try:
        if any("\x00" in arg for arg in args):  # only a caller of main() can pass one: a process argv cannot
            raise typer.BadParameter("an argument contains a NUL character")
        code = command.main(args=args, prog_name="kling", standalone_mode=False)
    except typer.TyperException as exc:
        code = _usage_error(exc, args)
    except typer.Abort:
        sys.stderr.write("kling: aborted\n")
        code = int(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        sys.stderr.write("kling: interrupted\n")
        code = int(ExitCode.INTERRUPTED)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    sys.exit(code if isinstance(code, int) else 0)
