"""What every growing network shares: weight/bias lists, sizes, parameter count, site checks,
and growth in place (new units appended with their optimizer state)."""

from __future__ import annotations

import torch
from torch import nn

from growenv.optim import grow_parameter


class GrowingNet(nn.Module):
    """Base of :class:`~growenv.nets.mlp.net.GrowingMLP` and
    :class:`~growenv.nets.conv.net.GrowingConvNet`.

    Each subclass names its family (``family = "mlp"``); the public verbs look the family
    up with :func:`~growenv.nets.registry.family_of`. Subclasses hold ``self.weights`` and
    ``self.biases`` (``nn.ParameterList``, one entry per layer, the head last) and define
    ``num_sites``; ``site_noun`` names a site in errors.
    """

    #: Registry name of the net's family (:mod:`growenv.nets.registry`), set by subclasses.
    family: str = ""
    site_noun = "hidden states"
    weights: nn.ParameterList
    biases: nn.ParameterList

    @property
    def num_sites(self) -> int:
        raise NotImplementedError

    @property
    def out_features(self) -> int:
        return self.weights[-1].shape[0]

    @property
    def hidden_widths(self) -> list[int]:
        """Current width (units or channels) of every site."""
        return [w.shape[0] for w in self.weights[:-1]]

    @property
    def num_layers(self) -> int:
        return len(self.weights)

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    def num_parameters(self) -> int:
        """Number of weights and biases."""
        return sum(p.numel() for p in self.parameters())

    def check_site(self, site: int) -> int:
        """Return ``site`` or raise a clear error if this net has no such site."""
        if isinstance(site, bool) or not isinstance(site, int):
            raise TypeError(f"site: expected an int, got {type(site).__name__}")
        if not 0 <= site < self.num_sites:
            raise ValueError(
                f"site: expected 0 <= site < {self.num_sites} ({self.site_noun} of this net), "
                f"got {site}"
            )
        return site

    @torch.no_grad()
    def grow(
        self,
        site: int,
        in_weight: torch.Tensor,
        in_bias: torch.Tensor,
        out_weight: torch.Tensor,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        """Append ``K`` units (neurons or channels) to ``site``.

        Parameters
        ----------
        site
            Site index (hidden state or conv stage).
        in_weight, in_bias
            Incoming weights of the new units, shaped like ``K`` rows of layer ``site``'s
            weight (MLP ``(K, fan_in)``, conv ``(K, C_in, k, k)``), and biases ``(K,)``.
        out_weight
            Their columns in the next layer's weight: MLP ``(out, K)``, conv ``(C_out, K, k',
            k')``, or head weights ``(out_features, K)`` after the last stage.
        optimizer
            Optimizer whose state for the grown parameters is zero-padded in place.
        """
        site = self.check_site(site)
        w_in, b_in, w_out = self.weights[site], self.biases[site], self.weights[site + 1]
        k = in_weight.shape[0] if in_weight.ndim else 0
        if in_weight.shape != (k, *w_in.shape[1:]) or in_bias.shape != (k,):
            raise ValueError(
                f"in_weight/in_bias: expected shapes (K, {', '.join(map(str, w_in.shape[1:]))}) "
                f"and (K,), got {tuple(in_weight.shape)} and {tuple(in_bias.shape)}"
            )
        expected = (w_out.shape[0], k, *w_out.shape[2:])
        if out_weight.shape != expected:
            raise ValueError(
                f"out_weight: expected shape {expected}, got {tuple(out_weight.shape)}"
            )
        grow_parameter(w_in, torch.cat([w_in.data, in_weight.to(w_in)], 0), optimizer)
        grow_parameter(b_in, torch.cat([b_in.data, in_bias.to(b_in)], 0), optimizer)
        grow_parameter(w_out, torch.cat([w_out.data, out_weight.to(w_out)], 1), optimizer)
