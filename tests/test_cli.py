"""The command line: --version, -v before or after the command, and a --help without markup in
which every command has a description and every option says what it does."""
import argparse

import pytest

from samc import __version__, cli


def _parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"samc {__version__}"


def test_verbose_anywhere():
    p = cli.build_parser()
    assert p.parse_args(["-v", "run"]).verbose and p.parse_args(["run", "-v"]).verbose
    assert p.parse_args(["memory", "show", "x", "-v"]).verbose and not p.parse_args(["run"]).verbose


def test_every_command_and_option_is_described():
    parsers = list(_parsers(cli.build_parser()))
    assert len(parsers) >= 12
    for p in parsers:
        text = p.format_help()
        assert "``" not in text and "%%" not in text, p.prog
        assert p.description, f"{p.prog}: no description"
        for action in p._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{p.prog} {action.option_strings or action.dest}: no help"
