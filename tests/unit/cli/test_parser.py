"""The command line's grammar (``cli.parser``): every command and ``pki`` action, and the
options every one of them takes before and after its name."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edgerq import __version__
from edgerq.cli.parser import LEVELS, build_parser

COMMANDS = {
    "status": ["status", "http://127.0.0.1:9100"],
    "sc": ["sc", "consumer.xml"],
    "sp": ["sp", "provider.xml"],
    "check": ["check", "consumer.xml"],
    "fingerprint": ["fingerprint", "consumer.xml"],
    "pki key": ["pki", "key", "sc.example.test"],
    "pki token": ["pki", "token", "pipe-token"],
    "pki show": ["pki", "show", "sc-cert.pem"],
    "pki export": ["pki", "export", "bundle", "sc-cert.pem"],
}
every_command = pytest.mark.parametrize("command", list(COMMANDS.values()), ids=list(COMMANDS))


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


# --- moved from test_cli.py: --version, --help and usage errors ------------------------


@pytest.mark.parametrize(
    "argv", [["--version"], ["check", "--version"], ["sc", "--version"], ["sp", "--version"]]
)
def test_version(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 0
    assert f"edgerq {__version__}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv", [["--help"], ["check", "--help"], ["sc", "--help"], ["sp", "--help"]]
)
def test_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: edgerq" in out
    assert "--log-level" in out


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--help"])
    out = capsys.readouterr().out
    for command in ("sc", "sp", "check"):
        assert command in out


@pytest.mark.parametrize("argv", [[], ["check"], ["frobnicate", "x.xml"]])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# --- the options every command takes ---------------------------------------------------------


@every_command
def test_text_at_info_by_default(command: list[str]) -> None:
    args = parse(command)
    assert (args.log_level, args.log_format) == ("info", "text")


@every_command
def test_log_options_before_the_command(command: list[str]) -> None:
    args = parse(["--log-level", "debug", "--log-format", "json", *command])
    assert (args.log_level, args.log_format) == ("debug", "json")


@every_command
def test_log_options_after_the_command(command: list[str]) -> None:
    args = parse([*command, "--log-level", "warning", "--log-format", "json"])
    assert (args.log_level, args.log_format) == ("warning", "json")


@every_command
def test_a_command_does_not_reset_what_was_given_before_it(command: list[str]) -> None:
    args = parse(["--log-level", "error", "--log-format", "json", *command])
    assert (args.log_level, args.log_format) == ("error", "json")
    args = parse(["--log-level", "error", *command, "--log-level", "debug"])
    assert (args.log_level, args.log_format) == ("debug", "text")  # the last one given


def test_pki_takes_them_between_pki_and_its_action() -> None:
    args = parse(["pki", "--log-level", "debug", "--log-format", "json", "key", "n"])
    assert (args.command, args.pki_command, args.log_level, args.log_format) == (
        "pki",
        "key",
        "debug",
        "json",
    )


@every_command
def test_version_after_the_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse([*command, "--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"edgerq {__version__} (")


@every_command
def test_version_before_the_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(["--version", *command])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"edgerq {__version__} (")


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_unknown_level_or_format_is_a_usage_error(
    where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for option, value in (("--log-level", "verbose"), ("--log-format", "xml")):
        argv = [option, value, "check", "c.xml"]
        if where == "after":
            argv = ["check", "c.xml", option, value]
        with pytest.raises(SystemExit) as info:
            parse(argv)
        assert info.value.code == 2
        assert f"argument {option}: invalid choice: '{value}'" in capsys.readouterr().err


def test_the_levels() -> None:
    assert LEVELS == ("debug", "info", "warning", "error")
    for level in LEVELS:
        assert parse(["--log-level", level, "check", "c.xml"]).log_level == level


# --- what each command is given --------------------------------------------------------------


@pytest.mark.parametrize("command", ["sc", "sp", "check", "fingerprint"])
def test_a_daemon_or_check_takes_one_config_path(command: str) -> None:
    args = parse([command, "etc/consumer.xml"])
    assert args.command == command and args.config == Path("etc/consumer.xml")


def test_status_takes_the_admin_url() -> None:
    args = parse(["status", "127.0.0.1:9100"])
    assert (args.command, args.url) == ("status", "127.0.0.1:9100")


def test_pki_key_defaults_and_options() -> None:
    args = parse(["pki", "key", "sc.example.test"])
    assert (args.pki_command, args.name, args.out, args.force, args.prefix) == (
        "key",
        "sc.example.test",
        Path("."),
        False,
        None,
    )
    args = parse(["pki", "key", "10.0.0.1", "--out", "keys", "--force", "--prefix", "sc"])
    assert (args.out, args.force, args.prefix) == (Path("keys"), True, "sc")


def test_pki_token_show_and_export_take_their_files() -> None:
    token = parse(["pki", "token", "secrets/pipe-token", "--force"])
    assert (token.pki_command, token.file, token.force) == (
        "token",
        Path("secrets/pipe-token"),
        True,
    )
    show = parse(["pki", "show", "a.pem", "b.pem"])
    assert (show.pki_command, show.files) == ("show", [Path("a.pem"), Path("b.pem")])
    export = parse(["pki", "export", "bundle", "a.pem", "token"])
    assert (export.pki_command, export.dest, export.files) == (
        "export",
        Path("bundle"),
        [Path("a.pem"), Path("token")],
    )


@pytest.mark.parametrize(
    "argv", [["pki"], ["pki", "rotate"], ["pki", "show"], ["status"], ["sc", "a.xml", "b.xml"]]
)
def test_missing_or_extra_arguments_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("usage: edgerq")
