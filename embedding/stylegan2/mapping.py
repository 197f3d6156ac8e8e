"""StyleGAN2 mapping network: z -> w, with the tracked average w and the truncation trick."""

from __future__ import annotations

import torch
from torch import nn

from embedding.stylegan2.layers import FullyConnected


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit root-mean-square. x (N, D) -> (N, D)."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


class MappingNetwork(nn.Module):
    """`num_layers` equalized-lr FC + lrelu layers (fc0, fc1, ...) and the `w_avg` buffer.

    Modules and buffers carry stylegan2-ada-pytorch's names (unconditional generators only).
    """

    w_avg: torch.Tensor  # buffer

    def __init__(self, *, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.995) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta: float | None = w_avg_beta
        features = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnected(features[i], features[i + 1], activation="lrelu",
                                                   lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def reset_parameters(self, gen: torch.Generator) -> None:
        self.w_avg.zero_()

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """The single w per sample, before broadcasting and truncation. z (N, z_dim) -> (N, w_dim)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be (N, {self.z_dim}), got {tuple(z.shape)}")
        x = normalize_2nd_moment(z)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x

    def forward(self, z: torch.Tensor, *, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                update_w_avg: bool | None = None) -> torch.Tensor:
        """z (N, z_dim) -> ws (N, num_ws, w_dim).

        The running mean of w (beta 0.995) is updated in training mode unless `update_w_avg` is False.
        Truncation pulls the first `truncation_cutoff` (default: all) ws toward w_avg by factor psi.
        """
        x = self.embed(z)
        if update_w_avg is None:
            update_w_avg = self.training
        if update_w_avg and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        return truncate(ws, self.w_avg, psi=truncation_psi, cutoff=truncation_cutoff)


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, *, psi: float, cutoff: int | None = None) -> torch.Tensor:
    """w_avg + psi * (w - w_avg) on the first `cutoff` layers. ws (N, L, D) -> (N, L, D)."""
    if psi == 1:
        return ws
    avg = w_avg.to(ws.dtype)
    if cutoff is None:
        return avg.lerp(ws, psi)
    ws = ws.clone()
    ws[:, :cutoff] = avg.lerp(ws[:, :cutoff], psi)
    return ws
