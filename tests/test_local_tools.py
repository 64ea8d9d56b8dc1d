"""The project's own scripts tell the user what is wrong in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import infra, stack
from tests.procs import REPO


def test_missing_java_gives_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "CLINICFLOW_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "scripts.infra", "up", "--name", "nojava"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "'java' was not found: install" in lines[0]


def test_second_up_while_one_runs_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLINICFLOW_CACHE_DIR", str(tmp_path))
    stack.stack_pidfile().parent.mkdir(parents=True)
    stack.stack_pidfile().write_text(str(os.getpid()))
    assert stack.up(infra.Instance()) == 1
    captured = capsys.readouterr()
    assert "already running" in captured.err
    assert "make down" in captured.err
