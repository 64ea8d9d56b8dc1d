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

from services.intake.domain.questionnaire import HealthAnswers
from shared.keys import InvalidToken, MissingKeyError, fernet


class HealthCipher:
    def __init__(self, keys: list[str]) -> None:
        self._fernet = fernet(keys)
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


__all__ = ["HealthCipher", "InvalidToken", "MissingKeyError"]
