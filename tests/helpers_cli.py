"""Running the command line in-process (typer's CliRunner) and checking its one-line errors:
shared by every test file that calls `tinytrans ...`."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from tinytrans.cli import app

runner = CliRunner()


def invoke(*args: str | Path, input: str | bytes | None = None) -> Result:
    """`tinytrans ARGS...` in this process, with `input` on stdin."""
    return runner.invoke(app, [str(a) for a in args], input=input)


def assert_one_line_error(result: Result, code: int, *causes: str) -> str:
    """Exit `code`, no traceback, one line on stderr starting 'error: ' and naming every cause;
    returns the line."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for cause in causes:
        assert cause in lines[0], lines[0]
    return lines[0]
