"""The decoded ELPV arrays kept in the machine cache are the package's cells exactly, and a
damaged cache file is not trusted (the cells are decoded again)."""

from __future__ import annotations

import numpy as np

from edgefpga.models import elpv


def test_cached_cells_equal_the_decoded_ones_and_damage_is_redone(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFPGA_CACHE", str(tmp_path))
    elpv.load.cache_clear()
    try:
        decoded = elpv.load()  # an empty cache: decodes the PNGs, stores the arrays
        key = elpv.package_key()
        assert key and sorted(p.name for p in (tmp_path / "elpv" / key).iterdir()) == ["images.npy", "proba.npy",
                                                                                      "types.npy"]
        cached = elpv.load_cached(key)
        for name in elpv.CACHED_ARRAYS:
            assert np.array_equal(getattr(cached, name), getattr(decoded, name)), name
        (tmp_path / "elpv" / key / "images.npy").write_bytes(b"not an array")
        assert elpv.load_cached(key) is None  # so load() decodes the PNGs again, as with an empty cache
    finally:
        elpv.load.cache_clear()
