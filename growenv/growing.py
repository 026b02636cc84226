"""What every growing network shares: weight/bias lists, sizes, parameter count, site checks."""

from __future__ import annotations

import torch
from torch import nn


class GrowingNet(nn.Module):
    """Base of :class:`~growenv.nets.GrowingMLP` and :class:`~growenv.conv.GrowingConvNet`.

    Subclasses hold ``self.weights`` and ``self.biases`` (``nn.ParameterList``, one entry per
    layer, the head last) and define ``num_sites``; ``site_noun`` names a site in errors.
    """

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
