"""Attack maths of FGSM, BIM, PGD, L2 PGD and MI-FGSM: torchattacks' attacks, fewer gradient computations.

Why these exist beside torchattacks (the measured speed-up, the agreement tests): ``attacks/__init__.py``.

- ``fgsm_sweep``: one input gradient serves every eps of an FGSM sweep; ``x + eps * sign(grad)``
  is computed per eps exactly as ``torchattacks.FGSM`` does.
- ``iterative``: BIM, PGD (Linf, random start), L2 PGD (random start) and MI-FGSM with the update
  and projection of their torchattacks classes, plus
  * several eps of one attack stacked into one batch (one forward/backward per step for all);
  * per-example early stopping: an example leaves the loop at the first iterate the model
    misclassifies, and that fooling iterate is returned. Examples are independent (the loss is a
    per-example sum and the model is in eval mode), so each example follows the trajectory the
    plain loop would; the plain loop can only lose a fooling iterate by stepping on, never find
    one earlier: the result is never weaker than the plain loop with the same random start.
  * random starts drawn per example from a seed derived from (attack, norm, eps, seed, example,
    restart), so they do not depend on batch size, on which other examples are attacked, on
    ``steps`` or ``alpha``: a longer run of the same attack extends the shorter one.

Engines yield ``Piece``s (spec, rows of the batch, adversarial images for those rows); scoring
and checks are the caller's job. The model must already be in eval mode (``attack_mode``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from attacks.spec import AttackSpec

__all__ = [
    "Piece",
    "derive_seed",
    "input_grad",
    "fgsm_sweep",
    "iterative",
    "ITERATIVE",
    "random_start",
    "uniform_noise",
]

ITERATIVE = ("bim", "pgd", "pgd_l2", "mifgsm")


class Piece(NamedTuple):
    """Adversarial images for some rows of a batch under one spec."""

    spec: AttackSpec
    rows: torch.Tensor
    adversarial: torch.Tensor


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (independent of Python's hash randomisation)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _input_grad(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Sum, not mean: each example's gradient is then independent of the batch it sits in.
    images = images.detach().clone().requires_grad_(True)
    logits = model(images)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    if not loss.requires_grad:  # the output does not depend on the input at all
        return logits.detach(), torch.zeros_like(images)
    (grad,) = torch.autograd.grad(loss, images, allow_unused=True)
    return logits.detach(), torch.zeros_like(images) if grad is None else grad


def input_grad(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, max_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and cross-entropy input gradients of a batch, ``max_rows`` examples at a time.

    The evaluation loop uses it for the clean pass when an FGSM sweep follows: the clean forward
    pass then also yields the FGSM gradient.
    """
    parts = [_input_grad(model, x, y) for x, y in zip(images.split(max_rows), labels.split(max_rows))]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def fgsm_sweep(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    specs: Sequence[AttackSpec],
    rows: torch.Tensor,
    *,
    max_rows: int,
    grad: torch.Tensor | None = None,
) -> Iterator[Piece]:
    """FGSM at every eps of ``specs`` from one gradient per example.

    Args:
        model: network in eval mode.
        images: the batch, [0, 1]; ``labels`` its labels.
        specs: ``fgsm`` specs (any eps).
        rows: positions in the batch to attack.
        max_rows: most examples per forward/backward pass.
        grad: input gradients of the whole batch if already computed (see ``input_grad``).

    Yields:
        One ``Piece`` per spec and chunk of rows, identical to ``torchattacks.FGSM(model, eps)``
        on those examples up to the loss reduction (sum instead of mean).
    """
    for chunk in rows.split(max_rows):
        if len(chunk) == 0:
            continue
        x = images[chunk]
        sign = (grad[chunk] if grad is not None else _input_grad(model, x, labels[chunk])[1]).sign()
        for spec in specs:
            yield Piece(spec, chunk, torch.clamp(x + spec.eps * sign, min=0, max=1).detach())


def random_start(spec: AttackSpec, image: torch.Tensor, seed: int) -> torch.Tensor:
    """The random starting point of ``pgd`` / ``pgd_l2`` for one example, as torchattacks draws it."""
    gen = torch.Generator().manual_seed(seed)
    cpu = image.detach().to("cpu")
    if spec.name == "pgd":
        noise = torch.empty(cpu.shape, dtype=cpu.dtype).uniform_(-spec.eps, spec.eps, generator=gen)
        start = torch.clamp(cpu + noise, min=0, max=1)
    elif spec.name == "pgd_l2":
        delta = torch.empty(cpu.shape, dtype=cpu.dtype).normal_(generator=gen)
        radius = torch.empty((), dtype=cpu.dtype).uniform_(0, 1, generator=gen)
        delta = delta * (radius / delta.norm(p=2) * spec.eps)
        start = torch.clamp(cpu + delta, min=0, max=1)
    else:
        start = cpu
    return start.to(image.device)


def uniform_noise(spec: AttackSpec, images: torch.Tensor, seed: int, example_index: Sequence[int]) -> torch.Tensor:
    """The ``noise`` baseline: per example, uniform noise in the Linf ball or a random L2 direction of length eps.

    Each example's draw is seeded by (spec, seed, example), so it does not depend on the batch.
    """
    out = []
    for image, number in zip(images, example_index):
        gen = torch.Generator().manual_seed(derive_seed("noise", spec.norm, repr(spec.eps), seed, int(number)))
        cpu = image.detach().to("cpu")
        if spec.norm == "Linf":
            delta = torch.empty(cpu.shape, dtype=cpu.dtype).uniform_(-spec.eps, spec.eps, generator=gen)
        else:
            delta = torch.empty(cpu.shape, dtype=cpu.dtype).normal_(generator=gen)
            delta = delta * (spec.eps / delta.norm(p=2).clamp_min(1e-12))
        out.append(torch.clamp(cpu + delta, min=0, max=1))
    if not out:
        return images.detach().clone()
    return torch.stack(out).to(images.device)


def _rows_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def _per_row(values: list[float], repeats: int, like: torch.Tensor) -> torch.Tensor:
    # Values per spec, repeated for the spec's rows, shaped to broadcast over images.
    column = torch.tensor(values, dtype=torch.float64).repeat_interleave(repeats)
    return _rows_view(column, like).to(like.device)


class _Step:
    """One update + projection of a torchattacks iterative attack, on rows with per-row eps/alpha."""

    def __init__(self, name: str, decay: float) -> None:
        self.name = name
        self.decay = decay

    def __call__(
        self,
        adv: torch.Tensor,
        orig: torch.Tensor,
        grad: torch.Tensor,
        eps: torch.Tensor,
        alpha: torch.Tensor,
        momentum: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.name == "bim":
            new = adv + alpha * grad.sign()
            low = torch.clamp(orig - eps, min=0)
            new = torch.minimum(torch.maximum(new, low), orig + eps)
            return torch.clamp(new, max=1), None
        if self.name == "pgd_l2":
            flat = grad.flatten(1)
            grad = grad / _rows_view(flat.norm(p=2, dim=1) + 1e-10, grad)
            delta = adv + alpha * grad - orig
            norms = delta.flatten(1).norm(p=2, dim=1)
            ones = torch.ones_like(norms)
            # A zero delta needs no projection (and eps / 0 would be NaN at eps = 0).
            factor = torch.where(norms > 0, torch.minimum(eps.flatten() / norms, ones), ones)
            return torch.clamp(orig + delta * _rows_view(factor, delta), min=0, max=1), None
        if self.name == "mifgsm":
            scale = grad.abs().mean(dim=tuple(range(1, grad.ndim)), keepdim=True)
            # An all-zero gradient stays zero (torchattacks would produce NaN).
            grad = grad / scale.clamp_min(torch.finfo(grad.dtype).tiny)
            assert momentum is not None
            grad = grad + momentum * self.decay
            momentum = grad
        new = adv + alpha * grad.sign()
        delta = torch.clamp(new - orig, min=-eps, max=eps)
        return torch.clamp(orig + delta, min=0, max=1), momentum


def _descend(
    model: nn.Module,
    orig: torch.Tensor,
    labels: torch.Tensor,
    start: torch.Tensor,
    eps: torch.Tensor,
    alpha: torch.Tensor,
    steps: int,
    step: _Step,
    early_stop: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``steps`` updates; returns the iterates and which rows were seen misclassified."""
    adv = start.clone()
    fooled = torch.zeros(len(adv), dtype=torch.bool, device=adv.device)
    momentum = torch.zeros_like(adv) if step.name == "mifgsm" else None
    active = torch.arange(len(adv), device=adv.device)
    for _ in range(steps):
        logits, grad = _input_grad(model, adv[active], labels[active])
        if early_stop:
            hit = logits.argmax(1) != labels[active]
            if hit.any():
                fooled[active[hit]] = True
                keep = ~hit
                active, grad = active[keep], grad[keep]
                if len(active) == 0:
                    break
        mom = momentum[active] if momentum is not None else None
        new, mom = step(adv[active], orig[active], grad, eps[active], alpha[active], mom)
        adv[active] = new.detach()
        if momentum is not None and mom is not None:
            momentum[active] = mom
    return adv, fooled


def iterative(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    specs: Sequence[AttackSpec],
    rows: torch.Tensor,
    *,
    seeds: Sequence[int],
    example_index: torch.Tensor,
    max_rows: int,
    early_stop: bool = True,
) -> Iterator[Piece]:
    """BIM / PGD / L2 PGD / MI-FGSM for several eps at once, with per-example early stopping.

    Args:
        model: network in eval mode.
        images: the batch, [0, 1]; ``labels`` its labels.
        specs: specs of one attack that differ only in ``eps`` / ``alpha`` (same steps, restarts, options).
        rows: positions in the batch to attack.
        seeds: the effective seed of each spec.
        example_index: global example number of every batch position (seeds the random starts).
        max_rows: most rows (examples x eps) per forward/backward pass.
        early_stop: stop each example at its first misclassified iterate (``False``: run every
            step, as for transfer attacks, where fooling the source model is not the goal).

    Yields:
        One ``Piece`` per spec and chunk of rows.
    """
    if not specs:
        return
    first = specs[0]

    def shared(s: AttackSpec) -> tuple[object, ...]:
        return s.name, s.norm, s.steps, s.restarts, s.options

    if first.name not in ITERATIVE or any(shared(s) != shared(first) for s in specs):
        keys = [s.key for s in specs]
        raise ValueError(f"iterative() needs specs of one attack differing only in eps/alpha, got {keys}")
    step = _Step(first.name, float(dict(first.options).get("decay", 1.0)))  # type: ignore[arg-type]
    k = len(specs)
    per_chunk = max(1, max_rows // k)
    for chunk in rows.split(per_chunk):
        m = len(chunk)
        if m == 0:
            continue
        x = images[chunk]
        orig = x.repeat(k, *([1] * (x.ndim - 1)))
        y = labels[chunk].repeat(k)
        eps = _per_row([s.eps for s in specs], m, orig)
        alpha = _per_row([s.alpha for s in specs], m, orig)
        best = orig.clone()
        done = torch.zeros(len(orig), dtype=torch.bool, device=orig.device)
        for restart in range(first.restarts or 1):
            todo = (~done).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            start = orig[todo].clone()
            if first.name in ("pgd", "pgd_l2"):
                numbers = example_index[chunk.cpu()].tolist()
                for j, row in enumerate(todo.tolist()):
                    s, i = divmod(row, m)
                    seed = derive_seed(first.name, first.norm, repr(specs[s].eps), seeds[s], numbers[i], restart)
                    start[j] = random_start(specs[s], orig[row], seed)
            adv, fooled = _descend(
                model, orig[todo], y[todo], start, eps[todo], alpha[todo], first.steps or 1, step, early_stop
            )
            best[todo] = adv
            done[todo] |= fooled
            if restart + 1 < (first.restarts or 1):
                # The last iterate of rows not yet fooled decides whether they need another start.
                open_rows = todo[~fooled]
                if len(open_rows):
                    with torch.no_grad():
                        done[open_rows] |= model(best[open_rows]).argmax(1) != y[open_rows]
        for s, spec in enumerate(specs):
            yield Piece(spec, chunk, best[s * m : (s + 1) * m])
