"""Ids derived from request data cannot be computed without the deployment's secret."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from services.intake.handlers import ids_for
from shared.ids import Ids, MissingIdSecret, load_ids
from shared.runtime import ServiceRuntime
from shared.settings import ServiceSettings


def test_the_same_key_gives_the_same_ids_only_under_the_same_secret() -> None:
    ours, theirs = Ids(b"a" * 32), Ids(b"b" * 32)
    first = ids_for(ours, "paris-01", "desk-0001", None)
    assert ids_for(ours, "paris-01", "desk-0001", None) == first, "a retry finds its answer"
    assert ids_for(theirs, "paris-01", "desk-0001", None) != first
    assert ids_for(ours, "nyc-01", "desk-0001", None) != first, "keys are scoped by site"
    # The first version's ids were uuid5 of a published namespace: computable by anyone.
    old = uuid.uuid5(
        uuid.UUID("6f1c3b0e-2d4a-4f8e-9b7c-5a1d0e3f2c10"), "screening:paris-01:desk-0001"
    )
    assert first[0] != str(old)
    assert ours.uuid("plan", first[0]) != theirs.uuid("plan", first[0])


def test_production_refuses_to_start_without_an_id_secret(tmp_path: Path) -> None:
    with pytest.raises(MissingIdSecret, match="CLINICFLOW_ID_SECRET"):
        ServiceRuntime(ServiceSettings(environment="production"))
    local = load_ids(None, production=False, local_file=tmp_path / "id.secret")
    again = load_ids(None, production=False, local_file=tmp_path / "id.secret")
    assert local.uuid("x") == again.uuid("x"), "the local secret is kept between starts"
    assert (tmp_path / "id.secret").stat().st_mode & 0o777 == 0o600
