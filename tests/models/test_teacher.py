"""Distillation teachers are rebuilt from their model folder alone and predict as the card says."""

import numpy as np
import pytest
import torch

from edgefpga.models import elpv
from edgefpga.models.card import ModelCardError, load_card
from edgefpga.models.preprocess import resize_batch
from edgefpga.models.teacher import TeacherEnsemble
from edgefpga.models.train import to_input


def test_zoo_teacher_reproduces_the_cards_validation_accuracy(zoo_model, elpv_data):
    spec = load_card(zoo_model).input
    teacher = TeacherEnsemble(["elpv_defect"], spec)  # a zoo name, as a card records it
    val = elpv.split(elpv_data).val
    pixels = torch.from_numpy(resize_batch(elpv_data.images[val], spec)).float() / 255
    proba = teacher.probabilities(to_input(pixels, spec)).numpy()
    assert proba.shape == (len(val), 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    accuracy = float(((proba[:, 1] > 0.5) == elpv_data.labels[val]).mean())
    assert accuracy == pytest.approx(load_card(zoo_model).raw["metrics"]["validation"]["accuracy"], abs=5e-4)


def test_teacher_of_another_size_sees_the_students_batch_resized(zoo_model, elpv_data):
    """The 96 px edge model teaching a 128 px student (the cloud model): the batch is area-resized
    to 96 px first, and the teacher stays as accurate on validation as its card says."""
    from dataclasses import replace

    spec = replace(load_card(zoo_model).input, height=128, width=128)
    teacher = TeacherEnsemble([zoo_model], spec)
    assert teacher.sizes == [(96, 96)] and teacher.provenance[0]["input_size"] == [96, 96]
    val = elpv.split(elpv_data).val
    pixels = torch.from_numpy(resize_batch(elpv_data.images[val], spec)).float() / 255
    proba = teacher.probabilities(to_input(pixels, spec)).numpy()
    assert proba.shape == (len(val), 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    accuracy = float(((proba[:, 1] > 0.5) == elpv_data.labels[val]).mean())
    # 300 -> 128 -> 96 px is not bit-for-bit 300 -> 96 px: a few cells may flip, not more
    assert accuracy == pytest.approx(load_card(zoo_model).raw["metrics"]["validation"]["accuracy"], abs=0.02)


@pytest.mark.parametrize("change", [{"color": "bgr", "channels": 3}])
def test_teacher_with_another_input_is_refused(zoo_model, change):
    from dataclasses import replace

    spec = replace(load_card(zoo_model).input, **change)
    with pytest.raises(ModelCardError, match="teacher input"):
        TeacherEnsemble([zoo_model], spec)


@pytest.mark.parametrize("change", [{"scale": 1 / 256}, {"mean": 0.4, "std": 0.5}])
def test_teacher_normalized_otherwise_sees_its_own_numbers(zoo_model, elpv_data, change):
    """A student normalized otherwise (a QAT student scales pixels by 1/256): its batch is mapped onto
    the teacher's normalization, so the teacher predicts as on its own input."""
    from dataclasses import replace

    own = load_card(zoo_model).input
    spec = replace(own, **change)
    val = elpv.split(elpv_data).val[:64]
    pixels = torch.from_numpy(resize_batch(elpv_data.images[val], own)).float() / 255
    mapped = TeacherEnsemble([zoo_model], spec).probabilities(to_input(pixels, spec))  # the student's numbers
    direct = TeacherEnsemble([zoo_model], own).probabilities(to_input(pixels, own))
    torch.testing.assert_close(mapped, direct, atol=1e-4, rtol=0)
