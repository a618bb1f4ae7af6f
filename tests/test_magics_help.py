"""The magics' help, built from their parsers, and their generation options, checked by the
protocol's schema. No model: every case here ends before one is needed."""

import pytest
from IPython.core.error import UsageError

from jupyter_codellama.magics import CodeLlamaMagics
from jupyter_codellama.magics.commands import CELL_DEFAULT, LINE_COMMANDS


@pytest.fixture
def magic():
    return CodeLlamaMagics(None)


def every_parser():
    return [CELL_DEFAULT.parser(), *(command.parser() for command in LINE_COMMANDS.values())]


@pytest.mark.parametrize("line", ["help", "", "-h", "--help"])
def test_help_shows_every_option_of_every_parser(magic, capsys, line):
    magic.codellama(line)
    shown = capsys.readouterr().out
    words = " ".join(shown.split())  # the summary wraps long lines
    for parser in every_parser():
        assert f"%{parser.prog}" in shown and parser.description in words
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in shown or flag in ("-h", "--help"), (parser.prog, flag)
            if not action.option_strings:
                assert action.metavar in shown, (parser.prog, action.dest)


@pytest.mark.parametrize("name", sorted(LINE_COMMANDS))
def test_a_command_s_full_help_is_its_parser_s(magic, capsys, name):
    magic.codellama(f"{name} -h")
    full = capsys.readouterr().out
    assert f"%codellama {name} [-h]" in full and "show this help message and exit" in full
    magic.codellama(f"help {name}")
    assert capsys.readouterr().out == full


def test_the_cell_magic_s_full_help(magic, capsys):
    magic.codellama("-h", "the body is not read")
    assert "%%codellama [-h]" in capsys.readouterr().out


def test_help_for_an_unknown_command_names_the_known_ones(magic):
    with pytest.raises(UsageError, match="Unknown subcommand 'bogus'. Use one of: load, status"):
        magic.codellama("help bogus")


@pytest.mark.parametrize(
    "line, message",
    [
        ("--max-new-tokens 0", "--max-new-tokens must be at least 1, got 0."),
        ("--max-new-tokens 8193", "--max-new-tokens must be at most 8192, got 8193."),
        ("--temperature 2.5", "--temperature must be at most 2, got 2.5."),
        ("--temperature -0.1", "--temperature must be at least 0, got -0.1."),
    ],
)
def test_generation_options_follow_the_protocol_s_bounds(magic, line, message):
    with pytest.raises(UsageError, match=f"^{message}$".replace(".", r"\.")):
        magic.codellama(line, "write a function")


def test_the_bounds_are_the_schema_s(magic, monkeypatch):
    """One rule for the magics and the comm: a bound changed in the schema moves both."""
    from jupyter_codellama import protocol

    options = protocol.SCHEMA["$defs"]["IGenerationOptions"]["properties"]
    monkeypatch.setitem(options, "max_new_tokens", {**options["max_new_tokens"], "maximum": 100})
    protocol._validator.cache_clear()
    try:
        with pytest.raises(UsageError, match="at most 100, got 101"):
            magic.codellama("--max-new-tokens 101", "write a function")
        with pytest.raises(protocol.BadRequest, match="out of range: 1..100"):
            protocol.validate_request("chat", {"messages": [{"role": "user", "content": "x"}], "max_new_tokens": 101})
    finally:
        protocol._validator.cache_clear()


def test_a_bad_setting_is_named_as_the_setting(magic, monkeypatch):
    monkeypatch.setattr(magic.settings, "temperature", 3.0)
    with pytest.raises(UsageError, match=r"^CodeLlama\.temperature must be at most 2, got 3\.0\.$"):
        magic.codellama("", "write a function")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_new_tokens": 0}, "'max_new_tokens' must be at least 1, not 0."),
        ({"max_new_tokens": 5.0}, "'max_new_tokens' must be an integer, not 5.0."),
        ({"temperature": "hot"}, "'temperature' must be a number, not 'hot'."),
        ({"max_time_ms": 0}, "'max_time_ms' must be over 0, not 0."),
        ({"stop": ["ok", 1]}, "'stop[1]' must be a string, not 1."),
    ],
)
def test_check_generation_options_names_the_field_and_its_rule(options, message):
    from jupyter_codellama.protocol import BadOption, check_generation_options

    with pytest.raises(BadOption) as caught:
        check_generation_options(options)
    assert str(caught.value) == message and caught.value.code == "bad_request"


def test_good_generation_options_pass():
    from jupyter_codellama.protocol import check_generation_options

    check_generation_options({"max_new_tokens": 8192, "temperature": 0, "stop": ["\n"], "max_time_ms": 1.5})
