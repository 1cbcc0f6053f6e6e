"""Teachers for distillation: trained model folders whose averaged predictions are a second target.

On 1.7k training cells the experts' labels are coarse (four defect probabilities) and noisy; the
averaged class probabilities of earlier models, computed on the same augmented image the student
sees, are a smoother target that also carries what those models learned. Teachers are loaded
from their model folders alone (ONNX weights into the architecture their card records), so a
distilled model's card can name exactly which files taught it.

A teacher may take another input size than its student (the 96 px edge models teach the 128 px
cloud model): the student's normalized batch is then area-resized to the teacher's size before
the teacher sees it. Normalization is linear, so resizing the normalized batch equals normalizing
the resized pixels. Another scale, mean or std is mapped the same way (the normalization is affine
in the pixel: a QAT student's pixels are scaled by 1/256, its float teacher's by 1/255);
everything else of the input (channels, color, resize method) must be the same, or the teacher
would see other images than it was trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import torch

from .arch import ArchConfig, build
from .card import InputSpec, ModelCardError, load_card, resolve_model_dir
from .export import load_folded


class TeacherEnsemble:
    """The mean softmax of several model folders, on normalized network inputs."""

    def __init__(self, models: list[str | Path], spec: InputSpec):
        """``models``: model folders or zoo names (a card records zoo names, so it retrains anywhere).
        ``spec``: the student's input; a teacher's may differ from it in height and width only."""
        self.models: list[torch.nn.Module] = []
        self.sizes: list[tuple[int, int]] = []  # each teacher's (height, width)
        self.maps: list[tuple[torch.Tensor, torch.Tensor] | None] = []  # student input -> teacher input (a, b)
        self.provenance: list[dict] = []
        for model in models:
            card = load_card(resolve_model_dir(model))
            same = dict(height=spec.height, width=spec.width, scale=spec.scale, mean=spec.mean, std=spec.std)
            if replace(card.input, **same) != spec:
                raise ModelCardError(f"{card.path}: teacher input {card.input} differs from the student's {spec} "
                                     "in more than its size and normalization")
            try:
                arch = ArchConfig(**(card.raw["architecture"] | {"widths": tuple(card.raw["architecture"]["widths"])}))
            except (KeyError, TypeError) as exc:
                raise ModelCardError(f"{card.path}: no architecture record to rebuild the teacher ({exc})") from exc
            self.models.append(load_folded(card.model_path, build(arch)))
            self.sizes.append((card.input.height, card.input.width))
            self.maps.append(renormalization(spec, card.input))
            digest = hashlib.sha256(card.model_path.read_bytes()).hexdigest()
            self.provenance.append({"name": card.name, "model_sha256": digest}
                                   | ({"input_size": list(self.sizes[-1])}
                                      if self.sizes[-1] != (spec.height, spec.width) else {}))

    @staticmethod
    def resized(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``x`` (N, C, H, W) at ``size`` by area resampling, as the cards' ``resize: area`` (OpenCV's
        INTER_AREA): each output pixel the mean of the input area it covers, fractional pixels at
        its border weighted by the part covered. (``F.interpolate(mode="area")`` is adaptive
        average pooling, whose windows overlap at a non-integer ratio: 128 -> 96 px blurs, and the
        edge model lost 2.4 points of validation accuracy on it.)"""
        if tuple(x.shape[-2:]) == size:
            return x
        rows, cols = (area_matrix(n_in, n_out, x.dtype) for n_in, n_out in zip(x.shape[-2:], size))
        return rows @ x @ cols.T

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(self.resized(x if ab is None else x * ab[0] + ab[1], size)).softmax(1)
                            for m, size, ab in zip(self.models, self.sizes, self.maps)]).mean(0)


def renormalization(student: InputSpec, teacher: InputSpec) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(a, b) per channel with ``teacher_x = a * student_x + b``, or None when both normalize alike:
    the normalization is affine in the pixel, so the student's input maps exactly onto the
    teacher's (a QAT student scales pixels by 1/256, its float teacher by 1/255)."""
    if (student.scale, student.channel_mean, student.channel_std) == (teacher.scale, teacher.channel_mean,
                                                                       teacher.channel_std):
        return None
    sm, ss = torch.tensor(student.channel_mean), torch.tensor(student.channel_std)
    tm, ts = torch.tensor(teacher.channel_mean), torch.tensor(teacher.channel_std)
    ratio = teacher.scale / student.scale  # pixel * student.scale = student.std * x + student.mean
    a, b = ss * ratio / ts, (sm * ratio - tm) / ts
    return a.view(1, -1, 1, 1).float(), b.view(1, -1, 1, 1).float()


def area_matrix(n_in: int, n_out: int, dtype=torch.float32) -> torch.Tensor:
    """(n_out, n_in) weights of area resampling along one axis: row i averages the input interval
    [i, i+1) * n_in / n_out, each input pixel weighted by its overlap with it."""
    edges = torch.arange(n_out + 1, dtype=torch.float64) * n_in / n_out
    left, right = edges[:-1, None], edges[1:, None]
    pixel = torch.arange(n_in, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(right, pixel + 1) - torch.maximum(left, pixel)).clamp(min=0)
    return (overlap / overlap.sum(1, keepdim=True)).to(dtype)
