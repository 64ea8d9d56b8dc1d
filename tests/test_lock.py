"""Installs come from the lock files: every declared dependency is locked, exactly and hashed.

`make` and the Dockerfile install with `pip --require-hashes` from `requirements/*.lock`; these
tests catch a dependency added to pyproject.toml without `make lock`, and a lock that still
allows a release with a known advisory.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)")


def locked(name: str) -> dict[str, Version]:
    """Package name -> exact version in one lock file; every pin carries a hash."""
    text = (LOCKS / name).read_text(encoding="utf-8")
    pins: dict[str, Version] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = PIN.match(block)
        if match:
            assert "--hash=sha256:" in block, f"{match.group(1)} is locked without a hash"
            pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    assert pins, f"{name} locks nothing"
    return pins


def declared(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return [Requirement(r) for r in names]


@pytest.mark.parametrize(("lock", "extra"), [("runtime.lock", None), ("dev.lock", "dev")])
def test_every_declared_dependency_is_locked_within_its_range(lock: str, extra: str | None) -> None:
    pins = locked(lock)
    for requirement in declared(extra):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {lock}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} has {name}=={pins[name]}, outside {requirement}: run `make lock`"
        )


def test_runtime_and_dev_locks_agree() -> None:
    runtime, dev = locked("runtime.lock"), locked("dev.lock")
    differing = {n: (v, dev.get(n)) for n, v in runtime.items() if dev.get(n) != v}
    assert not differing, f"the image would run other versions than the tests: {differing}"


@pytest.mark.parametrize(
    ("package", "first_fixed"),
    [("starlette", "0.40"), ("h11", "0.16"), ("setuptools", "70"), ("cloudevents", "2")],
)
def test_locks_hold_no_release_with_a_known_advisory(package: str, first_fixed: str) -> None:
    for lock in ("runtime.lock", "dev.lock"):
        version = locked(lock).get(package)
        if version is not None:
            assert version >= Version(first_fixed), f"{lock}: {package}=={version}"
    floors = [r for r in declared("dev") if canonicalize_name(r.name) == package]
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    floors += [Requirement(r) for r in build if Requirement(r).name == package]
    assert floors, f"pyproject.toml does not bound {package}"
    for floor in floors:
        lower = [Version(s.version) for s in floor.specifier if s.operator in {">=", ">"}]
        assert lower, f"{floor} has no lower bound"
        assert max(lower) >= Version(first_fixed), f"{floor} allows releases before {first_fixed}"
