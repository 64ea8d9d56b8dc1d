"""Health answers encrypted at rest (SPEC section 3), with Fernet from `cryptography`.

Fernet (AES-128-CBC + HMAC-SHA256, authenticated) through `MultiFernet`, so a key can be rotated:
the first key encrypts, every listed key decrypts. The same secret also keys the HMAC that
fingerprints requests for Idempotency-Key checks, so a stored fingerprint reveals nothing about
the answers without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from services.intake.domain.questionnaire import HealthAnswers


class MissingKeyError(RuntimeError):
    """No key for the health answers where the environment requires one."""


class HealthCipher:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise MissingKeyError("at least one key is needed")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        self._mac_key = hashlib.sha256(b"clinicflow-fingerprint:" + keys[0].encode()).digest()

    def encrypt(self, answers: HealthAnswers) -> str:
        return self._fernet.encrypt(answers.model_dump_json().encode()).decode()

    def decrypt(self, token: str) -> HealthAnswers:
        return HealthAnswers.model_validate_json(self._fernet.decrypt(token.encode()))

    def encrypt_codes(self, codes: list[str]) -> str:
        """Reason codes are derived from health answers, so they are health data too."""
        return self._fernet.encrypt(json.dumps(codes).encode()).decode()

    def decrypt_codes(self, token: str) -> list[str]:
        return [str(code) for code in json.loads(self._fernet.decrypt(token.encode()))]

    def fingerprint(self, payload: bytes) -> str:
        return hmac.new(self._mac_key, payload, hashlib.sha256).hexdigest()


def load_keys(configured: str | None, *, production: bool, local_key_file: Path) -> list[str]:
    """The configured keys; outside production a local key file is created when none is set."""
    if configured:
        keys = [k.strip() for k in configured.split(",") if k.strip()]
        for key in keys:
            try:
                Fernet(key.encode())
            except ValueError as exc:
                raise MissingKeyError(
                    "CLINICFLOW_HEALTH_KEY must hold Fernet keys (32 url-safe base64 bytes)"
                ) from exc
        return keys
    if production:
        raise MissingKeyError(
            "CLINICFLOW_HEALTH_KEY is not set: intake refuses to store health answers without "
            "an encryption key in production; generate one with `python -m "
            "services.intake.adapters.crypto`"
        )
    if not local_key_file.exists():
        local_key_file.parent.mkdir(parents=True, exist_ok=True)
        local_key_file.write_bytes(Fernet.generate_key())
        local_key_file.chmod(0o600)
    return [local_key_file.read_text().strip()]


__all__ = ["HealthCipher", "InvalidToken", "MissingKeyError", "load_keys"]

if __name__ == "__main__":
    print(Fernet.generate_key().decode())
