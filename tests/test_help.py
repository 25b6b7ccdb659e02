"""Help is built from a pruned command tree (start-up speed): it must read exactly as the full tree's."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from kling_cli.cli import app


def full_help(args: list[str]) -> str:
    runner = CliRunner()
    result = runner.invoke(app, args, prog_name="kling")
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("args", [["--help"], ["submit", "--help"], ["profile", "--help"], ["sandbox", "--help"],
                                  ["callback", "--help"], ["submit", "t2v", "--help"], ["wait", "--help"],
                                  ["-p", "x", "download", "--help"]])
def test_help_matches_the_full_tree(kling, args):
    result = kling(*args)
    assert result.exit_code == 0
    assert result.stdout == full_help(args)


def test_every_command_is_reachable(kling):
    command = typer.main.get_command(app)
    for name in command.commands:  # type: ignore[attr-defined]
        assert kling(name, "--help").exit_code == 0
