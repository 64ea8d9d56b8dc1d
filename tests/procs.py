"""Run a service as a real process (`python -m services.<name>`) for tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def service_process(
    name: str, port: int, env: dict[str, str], logfile: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the service, yield the process, and stop it with SIGTERM afterwards."""
    full_env = {**os.environ, **env, "CLINICFLOW_HTTP_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    with logfile.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(url: str, status: int = 200, timeout: float = 60.0) -> httpx.Response:
    """Poll `url` until it answers `status`; the last answer is returned or the wait fails."""
    deadline = time.monotonic() + timeout
    last: httpx.Response | str = "no answer"
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=2)
            if last.status_code == status:
                return last
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer {status} in {timeout}s; last: {last}")
