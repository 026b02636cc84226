"""Plain minibatch training between growth steps."""

from __future__ import annotations

import torch

from growenv.errors import UserError
from growenv.losses import PerSampleLoss, resolve_loss
from growenv.validation import choice, finite_values, real

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}


def make_optimizer(
    net: torch.nn.Module, name: str = "adam", lr: float = 1e-3, **kwargs
) -> torch.optim.Optimizer:
    """Build an optimizer by name (``"adam"``, ``"adamw"``, ``"sgd"``)."""
    choice("optimizer", name, sorted(OPTIMIZERS))
    lr = real("lr", lr, 0.0, exclusive=True, finite=True)
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
    check_finite: bool = True,
    draw_batch: int | None = None,
) -> torch.Tensor:
    """Run ``steps`` optimizer steps on random minibatches of ``(x, y)``.

    ``transform(x_batch, generator)``, if given, augments each minibatch (e.g.
    :func:`~growenv.data.cifar.augment`) with the same generator, so runs stay reproducible.

    Minibatch indices are drawn with ``generator`` (on the CPU, so runs are reproducible on
    every device). Returns the mean training loss over the steps as a 0-d tensor. The loop
    never synchronises with the host; ``check_finite`` adds one host check after it.

    Parameters
    ----------
    check_finite
        Raise :class:`~growenv.errors.UserError` (a ``ValueError``) if a minibatch loss was
        NaN or inf, naming the cause: NaN/inf in ``x`` or ``y``, a net that was already
        broken, or training that diverged (the optimizer step at which the loss blew up, its
        value, and the learning rate).
    draw_batch
        Indices drawn per step (default ``batch_size``), of which the first ``batch_size``
        are used: with a run's own minibatch size here, a smaller ``batch_size`` trains on
        the first samples of each of that run's minibatches (a nested subsample) and the
        generator advances as that run's would.
    """
    loss_fn = resolve_loss(loss)
    n = x.shape[0]
    total = torch.zeros((), device=x.device)
    if steps <= 0:
        return total
    draw = batch_size if draw_batch is None else draw_batch
    if draw < batch_size:
        raise ValueError(f"draw_batch: expected at least batch_size ({batch_size}), got {draw}")
    idx = torch.randint(0, n, (steps, min(draw, n)), generator=generator)
    idx = idx[:, : min(batch_size, n)].to(x.device)
    step_losses = []
    for step in range(steps):
        xb, yb = x[idx[step]], y[idx[step]]
        if transform is not None:
            xb = transform(xb, generator)
        optimizer.zero_grad(set_to_none=True)
        batch_loss = loss_fn(net(xb), yb).mean()
        batch_loss.backward()
        optimizer.step()
        step_losses.append(batch_loss.detach())
        total = total + step_losses[-1]
    if check_finite and not bool(torch.isfinite(total)):
        raise divergence_error(optimizer, x, y, torch.stack(step_losses))
    return total / steps


def divergence_error(
    optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, losses: torch.Tensor
) -> UserError:
    """The error of a training run whose minibatch ``losses`` (one per step) went NaN/inf.

    Names NaN/inf in the data first (``x``, ``y``); a loss that was not finite at the first
    step means the net was broken before training; otherwise training diverged, at the first
    step whose loss is not finite.
    """
    try:
        finite_values("x", x)
        finite_values("y", y)
    except ValueError as err:
        return err
    bad = (~torch.isfinite(losses)).nonzero()
    step = int(bad[0, 0]) if len(bad) else 0
    value = float(losses[step])
    if step == 0:
        return UserError(
            f"net: expected a net with a finite loss before training, got {value} at the first "
            "optimizer step (its weights or outputs are NaN or inf)"
        )
    lr = optimizer.param_groups[0]["lr"]
    return UserError(
        f"lr: expected a learning rate at which training converges, got {lr!r}: training "
        f"diverged, the minibatch loss was {value} at optimizer step {step + 1} of "
        f"{len(losses)} (last finite loss {float(losses[step - 1]):.4g}); lower lr"
    )


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
