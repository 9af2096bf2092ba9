"""tvconv/console.py: how the project's commands end, a closed pipe included."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMAND = "from tvconv.console import exit_with; exit_with(lambda: {body})"


def ended(body: str, pipe: str = "") -> subprocess.CompletedProcess:
    script = COMMAND.format(body=body)
    return subprocess.run(
        f'{sys.executable} -c "{script}"{pipe}; echo "rc=${{PIPESTATUS[0]}}" >&2',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("body", "code"), [("3", 3), ("0", 0), ("None", 0)])
def test_the_command_exits_with_what_main_returns(body, code):
    completed = ended(body)
    assert completed.stderr.strip() == f"rc={code}"


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly_with_141():
    completed = ended("print('line\\\\n' * 200000)", pipe=" | head -1")
    assert completed.stdout == "line\n"
    assert completed.stderr.strip() == "rc=141"  # 128 + SIGPIPE, and no BrokenPipeError traceback


def test_output_problem_names_what_is_wrong_and_makes_the_folder(tmp_path):
    from tvconv.console import output_problem

    (tmp_path / "file.txt").write_text("x")
    assert "is a folder" in output_problem(tmp_path, "--out")
    assert "file.txt is not a folder" in output_problem(tmp_path / "file.txt" / "r.json", "--out")
    deep = tmp_path / "a" / "b" / "run.json"
    assert output_problem(deep, "--out") is None and deep.parent.is_dir() and not deep.exists()


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        ("positive_int_arg", "3", 3),
        ("nonnegative_int_arg", "0", 0),
        ("positive_float_arg", "0.5", 0.5),
    ],
)
def test_number_arguments_accept_their_range(parse, text, value):
    from tvconv import console

    assert getattr(console, parse)(text) == value


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        ("positive_int_arg", "0", "expected a positive integer, got '0'"),
        ("positive_int_arg", "1.5", "expected a positive integer, got '1.5'"),
        ("nonnegative_int_arg", "-1", "expected an integer >= 0, got '-1'"),
        ("positive_float_arg", "inf", "expected a positive number, got 'inf'"),
        ("positive_float_arg", "nan", "expected a positive number, got 'nan'"),
        ("positive_float_arg", "-0.1", "expected a positive number, got '-0.1'"),
    ],
)
def test_number_arguments_refuse_with_what_was_expected(parse, text, message):
    import argparse

    from tvconv import console

    with pytest.raises(argparse.ArgumentTypeError, match=message):
        getattr(console, parse)(text)
