"""Every registered architecture builds, runs, and honours the registry's promises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustsparse.errors import ModelError
from robustsparse.models import Normalize, NormalizedModel, create_model, list_models, model_info, register_model

NUM_CLASSES = 7


def _build(arch: str, in_channels: int, image_size: int | None = None) -> NormalizedModel:
    size = image_size or model_info(arch).min_image_size
    return create_model(
        arch,
        num_classes=NUM_CLASSES,
        in_channels=in_channels,
        image_size=size,
        mean=[0.4] * in_channels,
        std=[0.2] * in_channels,
    )


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("arch", list_models())
def test_logits_shape_at_min_image_size(arch: str, in_channels: int) -> None:
    # Built at exactly the declared minimum size: the minimum must be real, not just documented.
    size = model_info(arch).min_image_size
    model = _build(arch, in_channels).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, in_channels, size, size))
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", list_models())
def test_structure_float32_single_normalize_first_conv_last_linear(arch: str) -> None:
    model = _build(arch, 1)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(b.dtype == torch.float32 for b in model.buffers() if b.is_floating_point())
    normalizers = [m for m in model.modules() if isinstance(m, Normalize)]
    assert normalizers == [model.normalize]
    assert all(name.startswith("net.") for name, _ in model.named_parameters())
    # The first conv reads the data and the last linear layer is the classifier: sparsity keeps
    # both dense by default and finds them in module order.
    convs = [m for m in model.net.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.net.modules() if isinstance(m, nn.Linear)]
    assert convs[0].in_channels == 1
    assert linears[-1].out_features == NUM_CLASSES
    if arch != "lenet5":  # LeNet-5 is 5x5 by definition; the others must offer 3x3 kernels to the granularities
        assert any(c.kernel_size == (3, 3) for c in convs)


@pytest.mark.parametrize("arch", ["small_cnn", "lenet5", "resnet20", "resnet18_cifar", "resnet50_v1"])
def test_every_parameter_gets_a_gradient(arch: str) -> None:
    model = _build(arch, 3, 32).train()
    x = torch.rand(2, 3, 32, 32)
    model(x).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("arch", [a for a in list_models() if model_info(a).min_image_size > 1])
def test_image_below_minimum_is_a_model_error(arch: str) -> None:
    size = model_info(arch).min_image_size - 1
    with pytest.raises(ModelError, match=rf"image_size {size}.*{arch}.*allowed: .*small_cnn"):
        _build(arch, 3, size)


def test_normalize_computes_per_channel_standardisation() -> None:
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.25, 0.5)
    layer = Normalize(mean, std)
    x = torch.rand(4, 3, 5, 6)
    expected = torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], dim=1)
    torch.testing.assert_close(layer(x), expected)
    assert layer.mean.shape == layer.std.shape == (1, 3, 1, 1)
    assert not list(layer.parameters())
    assert set(layer.state_dict()) == {"mean", "std"}


def test_normalized_model_feeds_normalised_input_to_net() -> None:
    seen: list[torch.Tensor] = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x)
            return x.flatten(1)

    model = NormalizedModel(Normalize((0.5,), (0.25,)), Spy())
    x = torch.rand(2, 1, 3, 3)
    out = model(x)
    torch.testing.assert_close(seen[0], (x - 0.5) / 0.25)
    torch.testing.assert_close(out, ((x - 0.5) / 0.25).flatten(1))


def test_create_model_uses_given_statistics() -> None:
    model = create_model("small_cnn", num_classes=3, in_channels=3, image_size=8, mean=(0.1, 0.2, 0.3), std=(1, 2, 4))
    assert model.normalize.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert model.normalize.std.flatten().tolist() == pytest.approx([1.0, 2.0, 4.0])


def test_unknown_arch_lists_allowed_names() -> None:
    with pytest.raises(ModelError) as info:
        create_model("resnet9000", num_classes=10, in_channels=3, image_size=32, mean=[0] * 3, std=[1] * 3)
    message = str(info.value)
    assert "resnet9000" in message
    assert all(name in message for name in list_models())
    with pytest.raises(ModelError, match="resnet9000"):
        model_info("resnet9000")


def test_mean_std_must_match_channels() -> None:
    with pytest.raises(ModelError, match="3 values"):
        create_model("small_cnn", num_classes=10, in_channels=3, image_size=8, mean=(0.5,), std=(0.5,))


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="small_cnn"):
        register_model("small_cnn", description="again", min_image_size=1)(lambda c, i, s: nn.Identity())


def test_resnet50_v1_moves_the_stride_to_the_first_1x1_conv() -> None:
    v15 = _build("resnet50", 3, 32).net
    v1 = _build("resnet50_v1", 3, 32).net
    for stage in ("layer2", "layer3", "layer4"):
        b15, b1 = getattr(v15, stage)[0], getattr(v1, stage)[0]
        assert (b15.conv1.stride, b15.conv2.stride) == ((1, 1), (2, 2))
        assert (b1.conv1.stride, b1.conv2.stride) == ((2, 2), (1, 1))
        assert b1.downsample[0].stride == b15.downsample[0].stride == (2, 2)
    # Only strides differ: same parameter names and shapes, so the same pruning code applies.
    assert {n: p.shape for n, p in v1.named_parameters()} == {n: p.shape for n, p in v15.named_parameters()}
    strides_v1 = [m.stride for m in v1.modules() if isinstance(m, nn.Conv2d)]
    strides_v15 = [m.stride for m in v15.modules() if isinstance(m, nn.Conv2d)]
    assert strides_v1 != strides_v15
    assert sorted(strides_v1) == sorted(strides_v15)


@pytest.mark.parametrize("arch", ["resnet20", "resnet32", "resnet56", "resnet18_cifar"])
def test_cifar_resnets_use_projection_shortcuts(arch: str) -> None:
    # Option B: every downsampling block has a 1x1 conv + BN shortcut, never a parameter-free one.
    net = _build(arch, 3, 32).net
    blocks = [m for m in net.modules() if hasattr(m, "downsample") and hasattr(m, "conv1")]
    downsampling = [b for b in blocks if b.conv1.stride != (1, 1) or b.conv1.in_channels != b.conv2.out_channels]
    assert downsampling
    for b in downsampling:
        conv, bn = b.downsample[0], b.downsample[1]
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and isinstance(bn, nn.BatchNorm2d)
    depth = 1 + 2 * len(blocks) + 1  # stem + two convs per block + classifier
    assert depth == int(arch.removeprefix("resnet").removesuffix("_cifar"))
