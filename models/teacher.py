"""Teachers for distillation: trained model folders whose averaged predictions are a second target.

On 1.7k training cells the experts' labels are coarse (four defect probabilities) and noisy; the
averaged class probabilities of earlier models, computed on the same augmented image the student
sees, are a smoother target that also carries what those models learned. Teachers are loaded
from their model folders alone (ONNX weights into the architecture their card records), so a
distilled model's card can name exactly which files taught it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .arch import ArchConfig, build
from .card import InputSpec, ModelCardError, load_card, resolve_model_dir
from .export import load_folded


class TeacherEnsemble:
    """The mean softmax of several model folders, on normalized network inputs."""

    def __init__(self, models: list[str | Path], spec: InputSpec):
        """``models``: model folders or zoo names (a card records zoo names, so it retrains anywhere)."""
        self.models: list[torch.nn.Module] = []
        self.provenance: list[dict] = []
        for model in models:
            card = load_card(resolve_model_dir(model))
            if card.input != spec:
                raise ModelCardError(f"{card.path}: teacher input {card.input} differs from the student's {spec}")
            try:
                arch = ArchConfig(**(card.raw["architecture"] | {"widths": tuple(card.raw["architecture"]["widths"])}))
            except (KeyError, TypeError) as exc:
                raise ModelCardError(f"{card.path}: no architecture record to rebuild the teacher ({exc})") from exc
            self.models.append(load_folded(card.model_path, build(arch)))
            digest = hashlib.sha256(card.model_path.read_bytes()).hexdigest()
            self.provenance.append({"name": card.name, "model_sha256": digest})

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).softmax(1) for m in self.models]).mean(0)
