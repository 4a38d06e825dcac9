"""Option validation of `counter-service loadtest`: clear errors, exit status 2. No servers."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from counter_service.devtools.loadtest import add_parser, main, run
from counter_service.devtools.loadtest.options import OptionsError, add_arguments, from_args

SPAWN = ["--spawn", "2"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_with_spawn_are_valid() -> None:
    options = from_args(parse(*SPAWN))
    assert (options.spawn, options.targets, options.sessions, options.clickers) == (2, (), 100, 10)
    assert (options.converge_timeout, options.redis_url, options.out) == (10.0, None, None)
    assert options.progress


def test_several_targets_are_kept_in_order() -> None:
    args = parse("--target", "http://127.0.0.1:8551", "--target", "http://127.0.0.1:8552/")
    assert from_args(args).targets == ("http://127.0.0.1:8551", "http://127.0.0.1:8552/")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "exactly one of --target URL"),
        ([*SPAWN, "--rate", "0"], "--rate 0.0: must be a number greater than 0"),
        ([*SPAWN, "--rate", "-3"], "--rate -3.0: must be a number greater than 0"),
        ([*SPAWN, "--rate", "nan"], "--rate nan: must be a number greater than 0"),
        ([*SPAWN, "--sessions", "5", "--clickers", "6"], "--clickers 6: more than --sessions 5"),
        ([*SPAWN, "--clickers", "0"], "--clickers 0: must be between 1"),
        ([*SPAWN, "--sessions", "0"], "--sessions 0: must be between 1"),
        ([*SPAWN, "--duration", "0"], "--duration 0.0: must be a number greater than 0"),
        ([*SPAWN, "--duration", "1e9"], "--duration 1000000000.0: must be at most 3600"),
        ([*SPAWN, "--ramp", "-1"], "--ramp -1.0: must be a number greater than 0"),
        ([*SPAWN, "--converge-timeout", "0"], "--converge-timeout 0.0: must be a number"),
        ([*SPAWN, "--ack-timeout", "inf"], "--ack-timeout inf: must be a number"),
        (["--spawn", "0"], "--spawn 0: must be between 1 and 32"),
        ([*SPAWN, "--redis-url", "redis://127.0.0.1:1/0"], "--redis-url is for --target"),
        (["--target", "127.0.0.1:8551"], "expected a URL like http://127.0.0.1:8551"),
        (["--target", "ftp://example/"], "expected a URL like"),
        (["--target", "http://127.0.0.1:1/?x=1"], "takes no query"),
        ([*SPAWN, "--out", "/nonexistent-dir/r.json"], "directory /nonexistent-dir does not"),
        ([*SPAWN, "--plot", "/"], "is a directory"),
        ([*SPAWN, "--namespace", ""], "--namespace must not be empty"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(argv: list[str], message: str) -> None:
    with pytest.raises(OptionsError) as raised:
        from_args(parse(*argv))
    assert message in str(raised.value)


def test_run_reports_bad_input_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse(*SPAWN, "--rate", "0")) == 2
    assert "counter-service loadtest: error: --rate 0.0" in capsys.readouterr().err


def test_both_spawn_and_target_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--spawn", "2", "--target", "http://127.0.0.1:8551"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_neither_spawn_nor_target_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "exactly one of --target" in capsys.readouterr().err


def test_a_non_number_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--spawn", "2", "--rate", "fast"])
    assert exited.value.code == 2
    assert "invalid float value: 'fast'" in capsys.readouterr().err


def test_add_parser_adds_the_loadtest_subcommand(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="counter-service")
    add_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "r.json"
    args = parser.parse_args(["loadtest", "--spawn", "1", "--sessions", "3", "--out", str(out)])
    assert args.command == "loadtest"
    options = from_args(args)
    assert (options.spawn, options.sessions, options.clickers, options.out) == (1, 3, 3, out)
