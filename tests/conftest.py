"""Shared fixtures: the real chest X-ray data that sits beside the repository."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["release_layouts", "hub_server"]  # the public sets' release folders; a local Hub

SHARED_DATA = Path(os.environ.get("VLP_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (or $VLP_SHARED_DATA); tests that need it skip with the reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real CXR data not found at {SHARED_DATA}; set VLP_SHARED_DATA to its folder")
    return SHARED_DATA
