"""Plain minibatch training between growth steps."""

from __future__ import annotations

import torch

from growenv.losses import PerSampleLoss, resolve_loss

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}


def make_optimizer(
    net: torch.nn.Module, name: str = "adam", lr: float = 1e-3, **kwargs
) -> torch.optim.Optimizer:
    """Build an optimizer by name (``"adam"``, ``"adamw"``, ``"sgd"``)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, got {name!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr: expected a number > 0, got {lr!r}")
    return OPTIMIZERS[name](net.parameters(), lr=lr, **kwargs)


def train_steps(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str | PerSampleLoss,
    steps: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    transform=None,
) -> torch.Tensor:
    """Run ``steps`` optimizer steps on random minibatches of ``(x, y)``.

    ``transform(x_batch, generator)``, if given, augments each minibatch (e.g.
    :func:`~growenv.data.cifar.augment`) with the same generator, so runs stay reproducible.

    Minibatch indices are drawn with ``generator`` (on the CPU, so runs are reproducible on
    every device). Returns the mean training loss over the steps as a 0-d tensor (no host
    synchronisation).
    """
    loss_fn = resolve_loss(loss)
    n = x.shape[0]
    total = torch.zeros((), device=x.device)
    if steps <= 0:
        return total
    idx = torch.randint(0, n, (steps, min(batch_size, n)), generator=generator).to(x.device)
    for step in range(steps):
        xb, yb = x[idx[step]], y[idx[step]]
        if transform is not None:
            xb = transform(xb, generator)
        optimizer.zero_grad(set_to_none=True)
        batch_loss = loss_fn(net(xb), yb).mean()
        batch_loss.backward()
        optimizer.step()
        total = total + batch_loss.detach()
    return total / steps


@torch.no_grad()
def evaluate(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str | PerSampleLoss,
    batch_size: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean loss and (for class labels) accuracy of ``net`` on ``(x, y)``, as 0-d tensors."""
    loss_fn = resolve_loss(loss)
    total = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device)
    classify = not y.is_floating_point()
    for start in range(0, x.shape[0], batch_size):
        out = net(x[start : start + batch_size])
        yb = y[start : start + batch_size]
        total = total + loss_fn(out, yb).sum()
        if classify:
            correct = correct + (out.argmax(-1) == yb).sum()
    n = max(x.shape[0], 1)
    return total / n, (correct / n if classify else None)
