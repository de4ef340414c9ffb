"""Muon (K. Jordan, 2024): SGD-momentum whose update for each weight matrix is orthogonalized by a
Newton-Schulz iteration, so that every direction of the filter space moves at the same rate.

Groups flagged `muon=True` (conv filters, viewed as (out, in*k*k) matrices) get the Muon update;
the other groups (biases, norms, the head) get plain Nesterov SGD with weight decay, so one
optimizer object (one state dict, one checkpoint) trains the whole net.
"""

from __future__ import annotations

import torch

NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic iteration tuned for a steep slope at zero (K. Jordan)


@torch.no_grad()
def orthogonalize(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T of g = U S V^T (singular values pushed towards ~1). g: (rows, cols) fp32."""
    a, b, c = NS_COEFFS
    x = g / (g.norm() + eps)  # top singular value <= 1, where the iteration converges
    transpose = x.shape[0] > x.shape[1]
    if transpose:  # iterate on the smaller Gram matrix
        x = x.T
    for _ in range(steps):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return x.T if transpose else x


class Muon(torch.optim.Optimizer):
    """Muon for groups with `muon=True`, Nesterov SGD for the rest.

    Group options: lr, momentum, nesterov, weight_decay (SGD groups), muon (bool), ns_steps,
    normalize (Muon groups: rescale each filter bank to norm sqrt(out_channels) before the step,
    which keeps the effective step size constant as in airbench94_muon).
    """

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.9, nesterov: bool = True,
                 weight_decay: float = 0.0, muon: bool = False, ns_steps: int = 3, normalize: bool = True):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, muon=muon,
                        ns_steps=ns_steps, normalize=normalize)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["muon"] and group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.mul_(mom).add_(g)
                g = g.add(buf, alpha=mom) if group["nesterov"] else buf
                if group["muon"]:
                    if group["normalize"]:
                        p.mul_(len(p) ** 0.5 / p.norm())
                    update = orthogonalize(g.reshape(len(g), -1).float(), group["ns_steps"]).view_as(p)
                    p.add_(update.to(p.dtype), alpha=-lr)
                else:
                    p.add_(g, alpha=-lr)
        return loss
