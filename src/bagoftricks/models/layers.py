"""Building blocks shared by the model zoo: activations, squeeze-and-excitation, stochastic depth and
the weight initialisations of §2.

Everything here is a plain ``nn.Module`` or a pure function of a module; nothing reads a recipe.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .catalog import ACTIVATIONS, INITS, check_choice

__all__ = [
    "DropPath",
    "SqueezeExcite",
    "init_weights",
    "make_activation",
]


def make_activation(name: str) -> nn.Module:
    """A fresh module of the activation registered as ``name`` in :data:`catalog.ACTIVATIONS`."""
    check_choice("activation", name, ACTIVATIONS)
    cls, kwargs = ACTIVATIONS[name]
    return getattr(nn, cls)(**kwargs)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): x · σ(W2 act(W1 mean_hw(x))).

    The hidden width is ``max(channels // reduction, 8)`` so narrow blocks keep a usable bottleneck.
    The inner non-linearity is the model's activation (ReLU in the original), so that choosing an
    activation changes every non-linearity of the network.
    """

    def __init__(self, channels: int, reduction: int, activation: str = "relu") -> None:
        super().__init__()
        if reduction <= 0:
            raise ValueError(f"se_reduction must be > 0 to build an SE module, got {reduction}")
        hidden = max(channels // reduction, 8)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.act = make_activation(activation)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016), per sample.

    In training, each sample's residual branch is zeroed with probability ``p`` and the survivors
    are scaled by 1/(1-p) so the expected output is unchanged; in eval it is the identity.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p:.4g}"


@torch.no_grad()
def init_weights(model: nn.Module, init: str = "xavier") -> nn.Module:
    """Initialise every conv, linear and BN layer of ``model`` in place and return it.

    * ``"xavier"`` — §2 of the paper: conv and FC weights ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out))
      (``nn.init.xavier_uniform_`` with gain 1). Fan convention is torch's, which is also MXNet's
      (the paper's framework) shape-based one: for a conv weight [C_out, C_in/groups, k, k],
      fan_in = C_in/groups·k² and fan_out = C_out·k².
    * ``"kaiming"`` — He et al. (2015) as in torchvision's ResNet: conv weights ~ N(0, 2/fan_out);
      linear weights get torch's default U(±1/sqrt(fan_in)).

    Both: every bias 0, every BN γ = 1 and β = 0 (running statistics reset to 0 / 1).
    """
    check_choice("init", init, INITS)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if init == "xavier":
                nn.init.xavier_uniform_(m.weight)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            if m.track_running_stats:
                m.reset_running_stats()
    return model


def set_batchnorm(model: nn.Module, eps: float = 0.0, momentum: float = 0.0) -> nn.Module:
    """Every batch-norm layer's eps and running-statistics momentum (torch's convention: the weight of the
    new batch's statistics; torch: 1e-5 and 0.1, airbench: 1e-12 and 0.4); 0 leaves the layer's own."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = eps or m.eps
            m.momentum = momentum or m.momentum
    return model
