"""Intake and the notifier refuse to run in production without the key that encrypts what
they keep: health answers, and webhook secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from shared.keys import MissingKeyError, load_keys
from tests.procs import REPO


@pytest.mark.parametrize(
    ("service", "setting"),
    [("intake", "CLINICFLOW_HEALTH_KEY"), ("notifier", "CLINICFLOW_WEBHOOK_KEY")],
)
def test_production_without_a_key_refuses_to_start(service: str, setting: str) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k != setting},
        "CLINICFLOW_ENVIRONMENT": "production",
        "CLINICFLOW_ID_SECRET": "an-id-secret-for-this-test-only",
        "CLINICFLOW_HTTP_PORT": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"{service} cannot start: {setting} is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_local_stack_generates_and_keeps_a_key(tmp_path: Path) -> None:
    key_file = tmp_path / "local.key"
    first = load_keys(None, setting="K", purpose="p", production=False, local_key_file=key_file)
    assert (
        load_keys(None, setting="K", purpose="p", production=False, local_key_file=key_file)
        == first
    )
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_rotated_keys_are_accepted_and_garbage_refused(tmp_path: Path) -> None:
    keys = [Fernet.generate_key().decode(), Fernet.generate_key().decode()]
    assert (
        load_keys(
            ",".join(keys), setting="K", purpose="p", production=True, local_key_file=tmp_path / "k"
        )
        == keys
    )
    with pytest.raises(MissingKeyError, match="Fernet keys"):
        load_keys(
            "not-a-key", setting="K", purpose="p", production=True, local_key_file=tmp_path / "k"
        )


def test_a_chain_policy_file_replaces_the_default(tmp_path: Path) -> None:
    from services.intake.app import load_policy
    from services.intake.domain.policy import DEFAULT_POLICY

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        """
version: acme-2027.1
rules:
  - answer: pregnant
    verdict: declined
    code: PREGNANCY
    messages: {en: Not during pregnancy., fr: Pas pendant la grossesse.}
"""
    )
    policy = load_policy(policy_file)
    assert policy.version == "acme-2027.1"
    assert [rule.code for rule in policy.rules] == ["PREGNANCY"]
    assert load_policy(None) is DEFAULT_POLICY
