"""Giving a swept model back: its parameters, buffers, modes, device, gradients, the
optimizer's state and torch's RNG state exactly as they were (:func:`preserved_state`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from lrtune.device import mps_available


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore torch's CPU (and CUDA or mps) RNG state on exit, whatever happens inside."""
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    mps_rng = torch.mps.get_rng_state() if mps_available() else None
    try:
        yield
    finally:
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        if mps_rng is not None:
            torch.mps.set_rng_state(mps_rng)


@contextmanager
def preserved_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> Iterator[None]:
    """Give ``model`` and ``optimizer`` back exactly as they were, whatever happens inside.

    Restored on exit: parameters and buffers (BatchNorm statistics), each module's train/eval
    mode, the device the model was on, each parameter's ``.grad`` (the sweep's backward
    passes leave one on every parameter; a user who had none, or had accumulated some, gets
    back exactly that), the optimizer's state and torch's RNG state.
    """
    device = next(model.parameters()).device
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    training = {name: m.training for name, m in model.named_modules()}
    opt_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    # The user's .grad tensors themselves, kept aside: moving the model to the sweep's
    # device would move them in place (a reference the user holds would change device),
    # and the sweep's backward passes would add to them. Nothing may raise from here to
    # the try.
    grads = [p.grad for p in model.parameters()]
    for param in model.parameters():
        param.grad = None
    try:
        with preserved_rng():
            yield
    finally:
        model.to(device)
        with torch.no_grad():
            model.load_state_dict(params)
        for name, module in model.named_modules():
            module.training = training.get(name, module.training)
        for param, grad in zip(model.parameters(), grads, strict=True):
            param.grad = grad
        if optimizer is not None and opt_state is not None:
            optimizer.load_state_dict(opt_state)
