"""Fernet keys for data kept encrypted at rest: intake's health answers, the notifier's webhook
secrets. A setting lists one or more keys, comma-separated: the first encrypts, every one
decrypts, so a key can be rotated without re-encrypting first. Outside production a key is
generated once into a local file, so `make up` needs no setup; production refuses to start
without one.

`python -m shared.keys` prints a new key.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class MissingKeyError(RuntimeError):
    """No usable key where the environment requires one; the message names the setting."""


def load_keys(
    configured: str | None,
    *,
    setting: str,
    purpose: str,
    production: bool,
    local_key_file: Path,
) -> list[str]:
    """The keys `setting` holds; outside production a local key file is used when unset."""
    if configured:
        keys = [k.strip() for k in configured.split(",") if k.strip()]
        for key in keys:
            try:
                Fernet(key.encode())
            except ValueError as exc:
                raise MissingKeyError(
                    f"{setting} must hold Fernet keys (32 url-safe base64 bytes)"
                ) from exc
        return keys
    if production:
        raise MissingKeyError(
            f"{setting} is not set: refusing to store {purpose} without an encryption key in "
            "production; generate one with `python -m shared.keys`"
        )
    if not local_key_file.exists():
        local_key_file.parent.mkdir(parents=True, exist_ok=True)
        draft = local_key_file.with_name(f".{local_key_file.name}.{os.getpid()}")
        draft.write_bytes(Fernet.generate_key())
        draft.chmod(0o600)
        # Linking fails if another process got there first: every process then uses one key.
        with contextlib.suppress(FileExistsError):
            os.link(draft, local_key_file)
        draft.unlink()
    return [local_key_file.read_text().strip()]


def fernet(keys: list[str]) -> MultiFernet:
    if not keys:
        raise MissingKeyError("at least one key is needed")
    return MultiFernet([Fernet(key.encode()) for key in keys])


__all__ = ["InvalidToken", "MissingKeyError", "fernet", "load_keys"]

if __name__ == "__main__":
    print(Fernet.generate_key().decode())
