"""The project's own scripts tell the user what is wrong in one line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from scripts import infra, stack
from scripts.infra import free_port
from shared.access import Role
from tests.procs import REPO, wait_for
from tests.support import passing_screening


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


def test_first_fetch_works_when_the_cache_folder_does_not_exist_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh machine has no cache folder (issue 9): the jars must still land in a new one.

    Maven is replaced by a script that writes one jar where it is told to, so the test checks
    our staging and caching of the folder, not Maven Central.
    """
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "java").write_text("#!/bin/sh\nexit 0\n")
    (tools / "mvn").write_text(
        "#!/bin/sh\nfor a; do case $a in -DoutputDirectory=*) out=${a#*=};; esac; done\n"
        'touch "$out/kafka_2.13.jar"\n'
    )
    for tool in tools.iterdir():
        tool.chmod(0o755)
    cache = tmp_path / "never" / "created"
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    monkeypatch.setenv("CLINICFLOW_CACHE_DIR", str(cache))
    libs = infra.kafka_libs()
    assert libs.is_relative_to(cache)
    assert (libs / "kafka_2.13.jar").exists()
    assert infra.kafka_libs() == libs, "the second call must use the cache"


def test_second_up_while_one_runs_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLINICFLOW_CACHE_DIR", str(tmp_path))
    inst = infra.Instance()
    stack.stack_pidfile(inst).parent.mkdir(parents=True)
    stack.stack_pidfile(inst).write_text(str(os.getpid()))
    assert stack.up(inst) == 1
    captured = capsys.readouterr()
    assert "already running" in captured.err
    assert "make down" in captured.err


def printed_keys(log: Path) -> dict[str, str]:
    """The `export CLINICFLOW_KEY_...=` lines `make up` prints once the stack is ready."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = dict(re.findall(r"export (CLINICFLOW_KEY_\w+)=(\S+)", log.read_text()))
        if len(found) == len(Role):
            return found
        time.sleep(0.3)
    return found


def test_make_up_runs_five_processes_restarts_a_dead_one_and_make_down_stops_them(
    tmp_path: Path,
) -> None:
    """`scripts.stack` as `make up` runs it, on private ports next to the test servers."""
    ports = [free_port() for _ in range(3)]
    env = {
        **os.environ,
        "CLINICFLOW_INFRA_NAME": f"stack-test-{os.getpid()}",
        "CLINICFLOW_KAFKA_PORT": str(free_port()),
        "CLINICFLOW_CONTROLLER_PORT": str(free_port()),
        "CLINICFLOW_MONGO_PORT": str(free_port()),
        "CLINICFLOW_STACK_PORTS": ",".join(map(str, ports)),
    }
    output = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "scripts.stack", "up"],
        cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
    )  # fmt: skip
    inst = infra.Instance(
        env["CLINICFLOW_INFRA_NAME"],
        int(env["CLINICFLOW_KAFKA_PORT"]),
        int(env["CLINICFLOW_CONTROLLER_PORT"]),
        int(env["CLINICFLOW_MONGO_PORT"]),
    )
    try:
        for port in ports:
            ready = wait_for(f"http://127.0.0.1:{port}/readyz", 200, timeout=120)
            assert all(ready.json()["checks"].values())
        keys = printed_keys(tmp_path / "up.log")
        assert set(keys) == {f"CLINICFLOW_KEY_{role.value.upper()}" for role in Role}
        screening = passing_screening()
        url = f"http://127.0.0.1:{ports[0]}/v1/screenings"
        assert httpx.post(url, json=screening).status_code == 401
        desk = {"Authorization": f"Bearer {keys['CLINICFLOW_KEY_FRONT_DESK']}"}
        assert httpx.post(url, json=screening, headers=desk).status_code == 201
        killed = infra.running_pid(inst.pidfile("scheduler"))
        assert killed is not None
        os.kill(killed, signal.SIGKILL)  # like an OOM kill: the stack starts it again
        deadline = time.monotonic() + 120
        while infra.running_pid(inst.pidfile("scheduler")) in (None, killed):
            assert time.monotonic() < deadline, "the scheduler was not restarted"
            time.sleep(0.3)
        wait_for(f"http://127.0.0.1:{ports[1]}/readyz", 200, timeout=120)
        assert "scheduler exited with code -9; restarting" in (tmp_path / "up.log").read_text()
        pids = [infra.running_pid(inst.pidfile(name)) for name in ("kafka", "ferretdb")]
        pids += [infra.running_pid(inst.pidfile(name)) for name in stack.service_ports()]
        assert all(pids), pids
        again = subprocess.run(
            [sys.executable, "-m", "scripts.stack", "up"],
            cwd=REPO, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert again.returncode == 1
        assert "already running" in again.stderr
        down = subprocess.run(
            [sys.executable, "-m", "scripts.stack", "down"],
            cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert down.returncode == 0
        assert up.wait(timeout=60) == 0
        for pid in pids:
            assert pid is not None
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if up.poll() is None:
            up.kill()
        infra.down(inst, purge=True)
