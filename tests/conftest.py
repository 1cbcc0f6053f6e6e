"""Shared fixtures: the real ELPV data (from the installed package) and the shipped model."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ZOO_MODEL = ROOT / "models" / "zoo" / "elpv_defect"


@pytest.fixture(scope="session")
def elpv_data():
    from edgefpga.models import elpv

    return elpv.load()


@pytest.fixture(scope="session")
def zoo_model() -> Path:
    return ZOO_MODEL
