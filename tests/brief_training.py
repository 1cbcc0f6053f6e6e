"""The tests' brief training of small nets: trained, not random (random nets' near-tie logits
defeat any width), in seconds."""

import torch
from torch import nn


def train_briefly(build, x: torch.Tensor, y: torch.Tensor, steps: int = 300) -> nn.Module:
    """``build()`` seeded 0, trained ``steps`` steps of 32 (Adam, 3e-3, a seeded order) on one
    thread (nets this small: a second thread only waits); returned in eval mode."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build()
        optimizer = torch.optim.Adam(model.parameters(), 3e-3)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        model.train()
        for step in range(steps):
            batch = order[(step * 32) % len(x):][:32]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()
