"""Mixture normalisation (Kalayeh & Shah, "Training faster by separating modes of variation in
batch-normalized models", arXiv 1806.02892): a Gaussian-mixture version of batch normalisation.

Batch normalisation standardises every channel against one Gaussian fitted to the mini-batch.
`MixtureNorm2d` fits K diagonal Gaussians in channel space instead (every pixel of every image is
one row of C values), gives every pixel a posterior over the components (a soft assignment), and
normalises the pixel against each component's own mean and variance:

    x_hat_i = sum_k tau_ik / sqrt(lambda_k) * (x_i - E_k) / sqrt(V_k + eps),   y = gamma * x_hat + beta

with tau_ik the posterior of component k for row i, lambda_k = n_k / n its share of the batch, and
E_k, V_k the tau-weighted mean and (biased) variance. With K = 1 this is exactly batch
normalisation. See `/work/shared/docs/methods.md` section 16.

What is the paper's and what is ours:

- the paper's [V]: the per-component normalisation and its soft sum, EM estimation of the
  mixture on the mini-batch, replacing only a few BN layers.
- ours (reconstruction, each a constructor argument with its default): diagonal components in
  channel space; ``em_steps`` = 2 EM iterations per training batch on at most ``max_rows`` = 4096
  rows (an evenly strided subsample, so no random numbers are drawn and resuming stays exact);
  k-means++ seeding once (from a fixed local generator, never the global one), then warm starts
  from the running statistics so components keep their identity; ``scale_by_weight`` (keep
  1/sqrt(lambda_k), default True); ``posterior_grad`` (gradients through tau in training,
  default False: the EM mixture is estimated without gradient and tau is treated as data);
  running statistics with BN's momentum 0.1 and BN's unbiased variance correction
  n_k / (n_k - 1) with n_k the soft count; for K > 1, the first training batch of a layer that was
  never seeded sets its running statistics outright (no blend with the 0/1 defaults).
- inference: posteriors under the stored mixture (running lambda, means, variances) and the
  stored per-component statistics, so a sample's output does not depend on the rest of its batch;
  gradients always flow through tau in eval mode (attacks differentiate the true function).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

from robustsparse.errors import ModelError

__all__ = ["MixtureNorm2d", "convert_to_mixture", "select_batchnorms", "mixture_layer_names"]

log = logging.getLogger(__name__)

#: Floor of a component's share of the batch (avoids dividing by an empty component).
_MIN_WEIGHT = 1e-6
#: The fixed seed of the k-means++ seeding (a local generator: the global RNG is never touched).
_KMEANS_SEED = 0


class MixtureNorm2d(nn.Module):
    """Mixture normalisation of NCHW activations with K diagonal Gaussian components.

    Args:
        num_features: channels C.
        components: K >= 1 (K = 1 is batch normalisation).
        eps: added to every variance.
        momentum: of the running statistics (as BatchNorm2d's).
        em_steps: EM iterations per training batch (ours, default 2).
        max_rows: EM runs on at most this many rows (pixels) of the batch (ours, 4096).
        scale_by_weight: keep the 1/sqrt(lambda_k) factor (ours; unverified in the paper).
        posterior_grad: in training, let gradients flow through the posteriors (ours, False).

    Buffers: ``running_weight`` (K,), ``running_mean`` / ``running_var`` (K, C),
    ``num_batches_tracked``, ``seeded`` (0 until the mixture has been seeded). Parameters:
    ``weight`` and ``bias`` (C,), shared by the components, as BatchNorm2d's.
    """

    running_weight: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor
    seeded: torch.Tensor

    def __init__(
        self,
        num_features: int,
        components: int = 3,
        *,
        eps: float = 1e-5,
        momentum: float = 0.1,
        em_steps: int = 2,
        max_rows: int = 4096,
        scale_by_weight: bool = True,
        posterior_grad: bool = False,
    ) -> None:
        super().__init__()
        if num_features < 1 or components < 1 or em_steps < 0 or max_rows < components:
            raise ValueError(
                f"MixtureNorm2d needs num_features >= 1, components >= 1, em_steps >= 0 and max_rows >= components; "
                f"got {num_features}, {components}, {em_steps}, {max_rows}"
            )
        self.num_features = num_features
        self.components = components
        self.eps = eps
        self.momentum = momentum
        self.em_steps = em_steps
        self.max_rows = max_rows
        self.scale_by_weight = scale_by_weight
        self.posterior_grad = posterior_grad
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_weight", torch.full((components,), 1.0 / components))
        self.register_buffer("running_mean", torch.zeros(components, num_features))
        self.register_buffer("running_var", torch.ones(components, num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        # K = 1 needs no seeding (its one component is the whole batch)
        self.register_buffer("seeded", torch.tensor(int(components == 1), dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, components={self.components}, eps={self.eps}, momentum={self.momentum}, "
            f"em_steps={self.em_steps}, scale_by_weight={self.scale_by_weight}, posterior_grad={self.posterior_grad}"
        )

    # ---- the mixture ------------------------------------------------------------------------------
    def log_posteriors(
        self, x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
    ) -> torch.Tensor:
        """log tau: (N, K, H, W) log posteriors of every pixel under the diagonal mixture given."""
        logs = []
        for k in range(self.components):
            m = mean[k].view(1, -1, 1, 1)
            v = var[k].view(1, -1, 1, 1) + self.eps
            loglik = -0.5 * (((x - m) ** 2) / v + torch.log(v)).sum(dim=1)  # the 2*pi constant cancels
            logs.append(loglik + torch.log(weight[k].clamp_min(_MIN_WEIGHT)))
        return torch.log_softmax(torch.stack(logs, dim=1), dim=1)

    def posteriors(self, x: torch.Tensor) -> torch.Tensor:
        """tau: (N, K, H, W) posteriors under the stored (running) mixture; they sum to 1 over K."""
        return self.log_posteriors(x, self.running_weight, self.running_mean, self.running_var).exp()

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """An evenly strided subsample of at most `max_rows` pixels, as (n, C) rows (no randomness)."""
        rows = x.detach().transpose(0, 1).reshape(self.num_features, -1).t()
        stride = max(1, math.ceil(rows.shape[0] / self.max_rows))
        return rows[::stride].float()

    def _kmeans_pp(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k-means++ seeds from a fixed local generator: (weight, mean, var)."""
        generator = torch.Generator().manual_seed(_KMEANS_SEED)
        cpu = rows.cpu()
        centres = [cpu[int(torch.randint(cpu.shape[0], (1,), generator=generator))]]
        for _ in range(1, self.components):
            d2 = torch.cdist(cpu, torch.stack(centres)).pow(2).min(dim=1).values
            probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / len(d2))
            centres.append(cpu[int(torch.multinomial(probs, 1, generator=generator))])
        mean = torch.stack(centres).to(rows.device)
        var = rows.var(dim=0, unbiased=False).clamp_min(self.eps).expand(self.components, -1).clone()
        weight = torch.full((self.components,), 1.0 / self.components, device=rows.device)
        return weight, mean, var

    @torch.no_grad()
    def _em(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's mixture by EM on a subsample, warm-started from the running statistics."""
        rows = self._rows(x)
        if int(self.seeded) == 0:
            weight, mean, var = self._kmeans_pp(rows)
        else:
            weight, mean, var = self.running_weight.float(), self.running_mean.float(), self.running_var.float()
        as_image = rows.t().reshape(1, self.num_features, -1, 1)  # (1, C, n, 1): reuse log_posteriors
        for _ in range(self.em_steps):
            tau = self.log_posteriors(as_image, weight, mean, var).exp()[0, :, :, 0].t()  # (n, K)
            count = tau.sum(dim=0).clamp_min(_MIN_WEIGHT)
            weight = count / rows.shape[0]
            mean = (tau.t() @ rows) / count[:, None]
            var = ((tau.t() @ rows.pow(2)) / count[:, None] - mean.pow(2)).clamp_min(0.0)
        return weight, mean, var

    # ---- forward ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"MixtureNorm2d({self.num_features}) expects NCHW input, got shape {tuple(x.shape)}")
        # In float32 and outside autocast (as BatchNorm under AMP): log-likelihoods summed over
        # channels, their softmax and the EM matmuls lose too much in bfloat16.
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
            out = self._forward_train(xf) if self.training else self._forward_eval(xf)
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)

    def _forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        tau = self.posteriors(x)
        out = torch.zeros_like(x)
        for k in range(self.components):
            scale = torch.rsqrt(self.running_var[k] + self.eps)
            if self.scale_by_weight:
                scale = scale * self.running_weight[k].clamp_min(_MIN_WEIGHT).rsqrt()
            out = out + tau[:, k : k + 1] * (x - self.running_mean[k].view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1)
        return out

    def _forward_train(self, x: torch.Tensor) -> torch.Tensor:
        n_rows = x.shape[0] * x.shape[2] * x.shape[3]
        if self.components == 1:
            tau = torch.ones_like(x[:, :1])
        else:
            weight, mean, var = self._em(x)
            log_tau = self.log_posteriors(x if self.posterior_grad else x.detach(), weight, mean, var)
            tau = log_tau.exp()
        out = torch.zeros_like(x)
        stats = []
        for k in range(self.components):
            t = tau[:, k : k + 1]
            count = t.sum().clamp_min(_MIN_WEIGHT)
            mean_k = (t * x).sum(dim=(0, 2, 3)) / count
            var_k = (t * (x - mean_k.view(1, -1, 1, 1)) ** 2).sum(dim=(0, 2, 3)) / count
            lam = count / n_rows
            scale = torch.rsqrt(var_k + self.eps)
            if self.scale_by_weight:
                scale = scale * lam.clamp_min(_MIN_WEIGHT).rsqrt()
            out = out + t * (x - mean_k.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1)
            stats.append((lam.detach(), mean_k.detach(), var_k.detach(), count.detach()))
        self._update_running(stats)
        return out

    @torch.no_grad()
    def _update_running(self, stats: list[tuple[torch.Tensor, ...]]) -> None:
        lam = torch.stack([s[0] for s in stats])
        mean = torch.stack([s[1] for s in stats])
        var = torch.stack([s[2] for s in stats])
        count = torch.stack([s[3] for s in stats])
        # BN's unbiased correction with the soft count (n / (n - 1) for K = 1)
        unbiased = var * (count / (count - 1).clamp_min(_MIN_WEIGHT))[:, None]
        self.num_batches_tracked.add_(1)
        if int(self.seeded) == 0:  # K > 1 never seeded: this batch's mixture is the first estimate
            self.running_weight.copy_(lam)
            self.running_mean.copy_(mean)
            self.running_var.copy_(unbiased)
            self.seeded.fill_(1)
            return
        m = self.momentum
        self.running_weight.mul_(1 - m).add_(lam.to(self.running_weight.dtype), alpha=m)
        self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
        self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)

    # ---- conversion -------------------------------------------------------------------------------
    @classmethod
    def from_batchnorm(
        cls, bn: nn.BatchNorm2d, components: int, *, seed_from_statistics: bool = True, **options
    ) -> MixtureNorm2d:
        """A mixture layer in place of `bn`: its gamma/beta, and components seeded from its statistics.

        With K = 1 the one component is BN's running mean and variance, so eval outputs are equal.
        With K > 1 (ours) component k's mean is ``mu + sigma * z_k`` with z_k the standard-normal
        quantile at (k + 0.5) / K, its variance BN's, and the weights uniform; the layer counts as
        seeded, so training warm-starts EM from there. ``seed_from_statistics=False`` (a model
        built from scratch) leaves a K > 1 layer unseeded (k-means++ on its first batch).
        """
        if not isinstance(bn, nn.BatchNorm2d) or not bn.affine or not bn.track_running_stats:
            raise ModelError(f"only affine BatchNorm2d layers with running statistics convert, got {bn!r}")
        layer = cls(bn.num_features, components, eps=bn.eps, momentum=bn.momentum or 0.1, **options)
        layer.to(device=bn.weight.device, dtype=bn.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(bn.weight)
            layer.bias.copy_(bn.bias)
            if components == 1 or seed_from_statistics:
                mu, var = bn.running_mean, bn.running_var
                q = torch.tensor([(k + 0.5) / components for k in range(components)], dtype=torch.float64)
                z = (math.sqrt(2.0) * torch.erfinv(2 * q - 1)).to(mu)
                layer.running_mean.copy_(mu[None, :] + z[:, None] * var.clamp_min(0).sqrt()[None, :])
                layer.running_var.copy_(var.expand(components, -1))
                layer.num_batches_tracked.copy_(bn.num_batches_tracked)
                layer.seeded.fill_(1)
        return layer


def mixture_layer_names(model: nn.Module) -> list[str]:
    """Module names of every `MixtureNorm2d` in `model`, in module order."""
    return [name for name, m in model.named_modules() if isinstance(m, MixtureNorm2d)]


def select_batchnorms(model: nn.Module, layers: str | int | Sequence[str]) -> list[str]:
    """The BatchNorm2d module names that `layers` picks: ``"all"``, the first N, or names.

    Names are full module names of `model` (for a `NormalizedModel`: ``net.bn1``,
    ``net.layer1.0.bn2``), in module order.

    Raises:
        ModelError: N out of range, or a name that is not a BatchNorm2d of the model.
    """
    available = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if isinstance(layers, str):
        if layers != "all":
            raise ModelError(f"mixture layers {layers!r}: expected 'all', a count or a list of BatchNorm2d names")
        return available
    if isinstance(layers, int):
        if not 1 <= layers <= len(available):
            raise ModelError(
                f"mixture layers = {layers}: the model has {len(available)} BatchNorm2d layers; use 1..{len(available)} or 'all'"
            )
        return available[:layers]
    unknown = [name for name in layers if name not in available]
    if unknown or not layers:
        raise ModelError(
            f"mixture layers {list(layers)}: {unknown or 'none given'} not BatchNorm2d layers of the model; "
            f"choose from {', '.join(available)}"
        )
    return [name for name in available if name in set(layers)]


def convert_to_mixture(
    model: nn.Module,
    layers: str | int | Sequence[str] = "all",
    components: int = 3,
    *,
    seed_from_statistics: bool = True,
    **options,
) -> list[str]:
    """Replace the chosen BatchNorm2d layers of `model` by `MixtureNorm2d`, in place.

    Args:
        model: a model with BatchNorm2d layers (e.g. a trained one).
        layers: ``"all"``, the first N BatchNorm2d layers in module order, or their names.
        components: K.
        seed_from_statistics: seed the components from BN's running statistics (see
            `MixtureNorm2d.from_batchnorm`); False for a model built from scratch.
        options: further `MixtureNorm2d` arguments (em_steps, scale_by_weight, posterior_grad...).

    Returns:
        The names of the replaced layers.
    """
    names = select_batchnorms(model, layers)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        bn = getattr(parent, child)
        layer = MixtureNorm2d.from_batchnorm(bn, components, seed_from_statistics=seed_from_statistics, **options)
        layer.train(bn.training)
        setattr(parent, child, layer)
    log.debug("mixture normalisation (K=%d) in place of %s", components, ", ".join(names))
    return names
