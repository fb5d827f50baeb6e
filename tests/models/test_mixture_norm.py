"""MixtureNorm2d: K = 1 is batch normalisation, posteriors are a distribution, eval is per-sample."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustsparse.errors import ModelError
from robustsparse.models import MixtureNorm2d, convert_to_mixture, create_model
from robustsparse.models.mixture_norm import mixture_layer_names, select_batchnorms


def _bn(channels: int = 6, seed: int = 0) -> nn.BatchNorm2d:
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1.0, 1.0)
    return bn


def _batch(n: int = 8, channels: int = 6, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, 5, 5, generator=generator) * 2.0 + 0.5


def _two_clusters(n: int = 16, channels: int = 4) -> torch.Tensor:
    """Half the images far below zero, half far above: two well-separated modes in channel space."""
    x = _batch(n, channels) * 0.2
    x[: n // 2] -= 5.0
    x[n // 2 :] += 5.0
    return x


def test_k1_equals_batchnorm_in_training_outputs_gradients_and_running_statistics():
    bn = _bn()
    mixture = MixtureNorm2d.from_batchnorm(bn, 1)
    x_bn = _batch().requires_grad_()
    x_mn = x_bn.detach().clone().requires_grad_()
    for step in range(3):  # several steps: the running statistics follow BN's too
        y_bn, y_mn = bn(x_bn), mixture(x_mn)
        torch.testing.assert_close(y_mn, y_bn, atol=1e-5, rtol=1e-5)
        grad = torch.randn(y_bn.shape, generator=torch.Generator().manual_seed(step))
        y_bn.backward(grad)
        y_mn.backward(grad)
    torch.testing.assert_close(x_mn.grad, x_bn.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixture.weight.grad, bn.weight.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixture.bias.grad, bn.bias.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixture.running_mean[0], bn.running_mean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mixture.running_var[0], bn.running_var, atol=1e-5, rtol=1e-5)


def test_k1_after_converting_a_trained_model_equals_it_in_eval():
    model = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8, mean=(0.3,), std=(0.4,))
    model.train()
    with torch.no_grad():  # running statistics away from 0/1, as a trained model's
        for _ in range(3):
            model(torch.rand(16, 1, 8, 8))
    model.eval()
    x = torch.rand(5, 1, 8, 8)
    expected = model(x)
    names = convert_to_mixture(model, "all", 1)
    assert names == ["net.bn1", "net.bn2", "net.bn3"] == mixture_layer_names(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_k3_posteriors_sum_to_one_in_training_and_eval():
    layer = MixtureNorm2d(4, 3)
    x = _two_clusters()
    layer(x)  # one training step seeds the mixture
    layer.eval()
    tau = layer.posteriors(x)
    assert tau.shape == (16, 3, 5, 5)
    assert bool((tau >= 0).all())
    torch.testing.assert_close(tau.sum(dim=1), torch.ones(16, 5, 5))
    log_tau = layer.log_posteriors(x, layer.running_weight, layer.running_mean, layer.running_var)
    torch.testing.assert_close(log_tau.exp().sum(dim=1), torch.ones(16, 5, 5))


def test_eval_output_of_a_sample_does_not_depend_on_the_rest_of_the_batch():
    layer = MixtureNorm2d(4, 3)
    layer(_two_clusters())
    layer.eval()
    x = _two_clusters()
    alone = layer(x[:1])
    other_batch = torch.cat([x[:1], _batch(7, 4, seed=9) * 10.0])
    torch.testing.assert_close(layer(other_batch)[:1], alone)
    torch.testing.assert_close(layer(x)[:1], alone)
    # whereas in training the batch matters (the statistics are the batch's)
    layer.train()
    assert not torch.allclose(layer(other_batch)[:1], layer(x)[:1])


def test_two_separated_clusters_are_normalised_per_cluster():
    """With two far-apart modes, each pixel is normalised against its own mode (times 1/sqrt(lambda))."""
    x = _two_clusters()
    for scale_by_weight in (True, False):
        layer = MixtureNorm2d(4, 2, scale_by_weight=scale_by_weight, em_steps=3)
        y = layer(x).detach()
        factor = 2.0**0.5 if scale_by_weight else 1.0  # lambda = 1/2 per mode
        for part in (slice(0, 8), slice(8, 16)):
            half = x[part]
            expected = (half - half.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(
                half.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + layer.eps
            )
            torch.testing.assert_close(y[part], expected * factor, atol=1e-4, rtol=1e-4)
    # batch normalisation of the same batch differs: it sees one wide mode
    assert not torch.allclose(nn.BatchNorm2d(4)(x), layer(x), atol=1e-2)


def test_eval_mode_gradients_are_exact_in_float64():
    layer = MixtureNorm2d(3, 2).double()
    layer(_two_clusters(8, 3).double())
    layer.eval()
    x = (_batch(2, 3) * 0.5).double().requires_grad_()
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)


def test_permuting_components_changes_nothing_in_eval():
    layer = MixtureNorm2d(4, 3)
    layer(_two_clusters())
    layer.eval()
    x = _batch(3, 4)
    expected = layer(x)
    order = torch.tensor([2, 0, 1])
    with torch.no_grad():
        for name in ("running_weight", "running_mean", "running_var"):
            getattr(layer, name).copy_(getattr(layer, name)[order])
    torch.testing.assert_close(layer(x), expected)


def test_training_draws_no_global_random_numbers():
    """k-means++ uses a local generator, EM a strided subsample: resuming stays exact."""
    torch.manual_seed(123)
    before = torch.get_rng_state()
    MixtureNorm2d(4, 3, max_rows=50)(_two_clusters())
    assert torch.equal(torch.get_rng_state(), before)


def test_layer_selection_all_first_n_and_names_and_one_line_errors():
    model = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8, mean=(0.3,), std=(0.4,))
    assert select_batchnorms(model, "all") == ["net.bn1", "net.bn2", "net.bn3"]
    assert select_batchnorms(model, 2) == ["net.bn1", "net.bn2"]
    assert select_batchnorms(model, ["net.bn3", "net.bn1"]) == ["net.bn1", "net.bn3"]
    for bad in (0, 4, ["net.bn9"], [], "some"):
        with pytest.raises(ModelError) as info:
            select_batchnorms(model, bad)
        assert "\n" not in str(info.value)


def test_a_model_built_with_mixture_norm_has_unseeded_layers_seeded_by_its_first_batch():
    model = create_model(
        "small_cnn",
        num_classes=10,
        in_channels=1,
        image_size=8,
        mean=(0.3,),
        std=(0.4,),
        norm="mixture",
        mixture={"layers": 1, "components": 3},
    )
    layers = [m for m in model.modules() if isinstance(m, MixtureNorm2d)]
    assert mixture_layer_names(model) == ["net.bn1"] and len(layers) == 1
    assert int(layers[0].seeded) == 0
    model.train()(torch.rand(8, 1, 8, 8))
    assert int(layers[0].seeded) == 1
    torch.testing.assert_close(layers[0].running_weight.sum(), torch.tensor(1.0))


def test_bfloat16_input_under_autocast_is_normalised_in_float32():
    layer = MixtureNorm2d(4, 2)
    x = _two_clusters().to(torch.bfloat16)
    expected = layer(x.float())  # the same (rounded) input, all in float32
    fresh = MixtureNorm2d(4, 2)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = fresh(x)
    assert got.dtype == torch.bfloat16
    # only the output's rounding to bfloat16 differs (8 bits of mantissa)
    torch.testing.assert_close(got.float(), expected, atol=0.02, rtol=0.01)
    torch.testing.assert_close(fresh.running_mean, layer.running_mean)
    torch.testing.assert_close(fresh.running_var, layer.running_var)
