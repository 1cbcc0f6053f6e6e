"""The sample store on real ELPV cells and real edge results: a folder `edgefpga train` reads, the
SQLite queries, an operator's label, refusals, and a full disk that loses nothing."""

from __future__ import annotations

import errno
import os

import cv2
import numpy as np
import pytest

from edgefpga.fleet.store import CloudOutput, EdgeOutput, SampleStore, StoreError
from edgefpga.models import folder

T0 = 1_800_000_000.0  # creation times of the samples, one minute apart


@pytest.fixture(scope="module")
def cells(elpv_data, zoo_model):
    """12 ELPV cells, their contract labels and the shipped model's results on them."""
    import edgefpga.runtime as rt

    idx = np.r_[np.flatnonzero(elpv_data.labels == 0)[:6], np.flatnonzero(elpv_data.labels == 1)[:6]]
    images = [elpv_data.images[i] for i in idx]
    with rt.open(zoo_model, backend="onnx") as engine:
        results = engine.infer(images)
    names = ["functional", "defective"]
    return images, [names[k] for k in elpv_data.labels[idx]], results


def cloud_says(label: str) -> CloudOutput:
    p = [0.95, 0.05] if label == "functional" else [0.05, 0.95]
    return CloudOutput(label, ["functional", "defective"], p, "cloud-resnet@3")


KINDS = ["true", "cloud", "cloud", "edge", "true", "cloud", "edge", "edge", "true", "cloud", "cloud", "true"]


def fill(store: SampleStore, cells) -> None:
    """Cells 0-5 are functional, 6-11 defective: 4 get an operator's true label, 5 were decided by
    the cloud (their images left the site), 3 the edge kept to itself (unlabeled)."""
    images, truth, results = cells
    for i, (image, label, result) in enumerate(zip(images, truth, results)):
        edge = EdgeOutput.from_result(result, "elpv_defect@1")
        if KINDS[i] == "true":
            store.add(image, edge, true_label=label, labeled_by="operator", created=T0 + 60 * i, source=f"cell {i}")
        elif KINDS[i] == "cloud":
            store.add(image, edge, cloud=cloud_says(label), escalated=True, created=T0 + 60 * i)
        else:
            store.add(image, edge, created=T0 + 60 * i)


@pytest.mark.timeout(120)
def test_store_is_a_folder_edgefpga_train_reads(tmp_path, cells):
    images, truth, results = cells
    with SampleStore(tmp_path / "samples") as store:
        fill(store, cells)
        stored = store.samples()
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "defective", "functional", "index.sqlite", "unlabeled"]
    data = folder.training_data(tmp_path / "samples")  # what `edgefpga train <folder>` loads
    labelled = [s for s in stored if s.label != "unlabeled"]
    assert data.classes == ["defective", "functional"] and len(data.labels) == len(labelled) == 9
    for s in labelled:  # every image lossless, under the class the store says
        assert s.label == truth[s.id - 1]
        assert np.array_equal(cv2.imread(str(s.image), cv2.IMREAD_UNCHANGED), images[s.id - 1])
    assert sum(s.label == "unlabeled" for s in stored) == 3
    first = stored[0]  # the edge output kept exactly
    assert first.edge.probabilities == results[0].probabilities and first.edge.confidence == results[0].confidence
    assert first.edge.model_version == "elpv_defect@1" and first.source == "cell 0"
    assert (first.true_label, first.labeled_by) == (truth[0], "operator")
    assert (first.decided_by, first.escalated) == ("edge", False)


@pytest.mark.timeout(120)
def test_queries(tmp_path, cells):
    with SampleStore(tmp_path / "s") as store:
        fill(store, cells)
        assert store.count() == 12
        assert store.count(since=T0 + 60 * 6) == 6
        assert store.count_by("decided_by") == {"cloud": 5, "edge": 7}
        assert store.count_by("escalated") == {False: 7, True: 5}  # the 5 images that left the site
        assert store.count_by("label") == {"defective": 4, "functional": 5, "unlabeled": 3}
        assert store.count_by("label", since=T0 + 60 * 6) == {"defective": 4, "unlabeled": 2}
        assert [s.id for s in store.samples(decided_by="cloud", since=T0 + 60 * 5)] == [6, 10, 11]
        assert all(s.cloud.model_version == "cloud-resnet@3" for s in store.samples(escalated=True))
        assert store.count(label="unlabeled", decided_by="edge") == 3
    with SampleStore(tmp_path / "s") as again:  # the index outlives the process that wrote it
        assert again.count() == 12


@pytest.mark.timeout(120)
def test_an_operators_label_files_the_image_under_it(tmp_path, cells):
    with SampleStore(tmp_path / "s") as store:
        fill(store, cells)
        for s in store.samples(label="unlabeled"):
            moved = store.set_true_label(s.id, "functional", labeled_by="anna")
            assert moved.image.parent.name == "functional" and moved.image.is_file() and not s.image.exists()
            assert moved.labeled_by == "anna"
        assert not (tmp_path / "s" / "unlabeled").exists()  # emptied, removed: training never sees an empty class
        assert store.count_by("label") == {"defective": 4, "functional": 8}
    assert len(folder.training_data(tmp_path / "s").labels) == 12


@pytest.mark.timeout(120)
def test_refusals_write_nothing(tmp_path, cells):
    images, _, results = cells
    edge = EdgeOutput.from_result(results[0])
    with SampleStore(tmp_path / "s") as store:
        with pytest.raises(StoreError, match="not escalated"):
            store.add(images[0], edge, cloud=cloud_says("defective"))
        for bad in ("train", "unlabeled", "bad label"):
            with pytest.raises(StoreError, match="cannot name a class folder"):
                store.add(images[0], edge, true_label=bad)
        with pytest.raises(StoreError, match="8- or 16-bit"):
            store.add(images[0].astype(np.float32), edge)
        with pytest.raises(StoreError, match="without the cloud"):
            store.add(images[0], edge, decided_by="cloud")
        with pytest.raises(StoreError, match="no sample 7"):
            store.set_true_label(7, "functional")
        assert store.count() == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["index.sqlite"]


@pytest.mark.timeout(120)
def test_a_full_disk_is_a_clear_error_and_loses_nothing(tmp_path, cells, monkeypatch):
    """The disk fills in the middle of an image (the only stand-in here: a tmpfs needs root):
    half the bytes reach the disk, then ENOSPC."""
    images, _, results = cells
    root = tmp_path / "s"
    with SampleStore(root) as store:
        kept = [store.add(images[i], EdgeOutput.from_result(results[i]), true_label="functional") for i in range(3)]
        before = {p: p.read_bytes() for p in root.rglob("*.png")}
        real_write = os.write

        def fill_up(fd, data):
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "write", fill_up)
        with pytest.raises(StoreError) as err:
            store.add(images[3], EdgeOutput.from_result(results[3]), true_label="functional")
        monkeypatch.undo()
        assert str(root / "functional") in str(err.value) and "disk is full" in str(err.value)
        assert store.count() == 3 and [s.id for s in store.samples()] == [s.id for s in kept]
        assert {p: p.read_bytes() for p in root.rglob("*.png")} == before  # nothing lost, nothing half-written
        assert not [p for p in root.rglob("*") if p.suffix == ".tmp"]
        after = store.add(images[3], EdgeOutput.from_result(results[3]), true_label="functional")  # space again
        assert after.image.is_file() and store.count() == 4


@pytest.mark.timeout(60)
def test_a_cloud_label_records_who_gave_it_and_old_stores_migrate(tmp_path, cells):
    """Each stored cloud answer keeps the model version and the signing service's identity; a
    store made before the column existed opens, keeps its rows (identity unknown) and takes new ones."""
    import sqlite3

    from edgefpga.fleet import store as store_module

    images, truth, results = cells
    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / store_module.INDEX_FILE) as db:  # the schema before issue 31
        db.executescript(store_module.SCHEMA.replace(
            "    cloud_identity TEXT,        -- the answering service's certificate subject (signed answer); "
            "NULL: unsigned\n", ""))
        assert "cloud_identity" not in {row[1] for row in db.execute("PRAGMA table_info(samples)")}
        db.execute("INSERT INTO samples (image, created, source, edge_model, edge_label, edge_classes, edge_scores, "
                   "edge_probabilities, confidence, cloud_model, cloud_label, cloud_classes, cloud_probabilities, "
                   "decided_by, escalated) VALUES ('defective/sample_0000001.png', 1, '', 'v1', 'functional', "
                   "'[\"functional\", \"defective\"]', '[0, 0]', '[0.5, 0.5]', 0.1, 'cloud@0', 'defective', "
                   "'[\"functional\", \"defective\"]', '[0.1, 0.9]', 'cloud', 1)")
    with SampleStore(old) as store:
        assert store.get(1).cloud.service_identity is None and store.get(1).cloud.model_version == "cloud@0"
        signed = CloudOutput("defective", ["functional", "defective"], [0.1, 0.9], "cloud@7",
                             "O=Plant 7,CN=edgefpga-cloud")
        sample = store.add(images[0], EdgeOutput.from_result(results[0], "v1"), cloud=signed, escalated=True)
    with SampleStore(old) as store:  # read back from the index, not from memory
        again = store.get(sample.id)
    assert again.cloud.service_identity == "O=Plant 7,CN=edgefpga-cloud" and again.cloud.model_version == "cloud@7"
