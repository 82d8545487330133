"""Tests for the model zoo: shapes, naming, supported layers, feature taps and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.models import (
    CERTIFIABLE_MODELS,
    LIPSCHITZ_MODELS,
    MODELS,
    Normalize,
    PreActBlock,
    build_model,
    feature_names,
    forward_features,
)

# Small widths so the whole file stays fast on CPU.
SMALL_OPTIONS = {
    "mlp": {"depth": 2, "width": 16},
    "cnn_small": {"width": 1, "linear_size": 16},
    "cnn7": {"width": 4, "linear_size": 16},
    "cnn7_tin": {"width": 4, "linear_size": 16},
    "preact_resnet18": {"width": 4},
    "wide_resnet": {"depth": 10, "widen_factor": 1},
    "lip_mlp": {"depth": 1, "width": 16},
}
SUPPORTED_LAYERS = (
    nn.Linear,
    nn.Conv2d,
    nn.ReLU,
    nn.Flatten,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.AvgPool2d,
    Normalize,
)
NUM_CLASSES = 7


def small_model(name: str, input_shape: tuple[int, int, int], **kwargs) -> nn.Sequential:
    return build_model(name, input_shape, NUM_CLASSES, **SMALL_OPTIONS[name], **kwargs)


def hooked_io(module: nn.Module, model: nn.Module, x: torch.Tensor):
    """(input, output) of ``module`` during ``model(x)``, captured with a forward hook.

    Clones, so that a later in-place op in the model would show up as a mismatch.
    """
    seen = {}

    def hook(_module, inputs, output):
        seen["input"], seen["output"] = inputs[0].clone(), output.clone()

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    finally:
        handle.remove()
    return seen["input"], seen["output"]


def test_registry_lists_all_models_and_certifiable_subset():
    teachers = ("preact_resnet18", "wide_resnet")
    assert ("mlp", "cnn_small", "cnn7", "cnn7_tin", *teachers, "lip_mlp") == MODELS
    assert CERTIFIABLE_MODELS == ("mlp", "cnn_small", "cnn7", "cnn7_tin")
    assert LIPSCHITZ_MODELS == ("lip_mlp",)
    assert set(SMALL_OPTIONS) == set(MODELS)


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 32, 32)])
@pytest.mark.parametrize("name", MODELS)
def test_forward_shapes_train_and_eval(name, input_shape):
    torch.manual_seed(0)
    model = small_model(name, input_shape)
    x = torch.rand(3, *input_shape)

    model.train()
    assert model(x).shape == (3, NUM_CLASSES)

    model.eval()
    with torch.no_grad():
        batch = model(x)
        single = model(x[:1])
    assert batch.shape == (3, NUM_CLASSES)
    assert single.shape == (1, NUM_CLASSES)
    # In eval mode samples are independent (BatchNorm uses running statistics).
    torch.testing.assert_close(single, batch[:1])


@pytest.mark.parametrize("name", CERTIFIABLE_MODELS)
def test_certifiable_models_take_28x28(name):
    model = small_model(name, (1, 28, 28)).eval()
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, NUM_CLASSES)


def test_mlp_children_and_sizes():
    model = build_model("mlp", (1, 8, 8), 10, depth=3, width=32)
    names = [name for name, _ in model.named_children()]
    expected = ["normalize", "flatten", "fc1", "relu1", "fc2", "relu2", "fc3", "relu3", "fc_out"]
    assert names == expected
    assert model.fc1.in_features == 64
    assert model.fc3.out_features == 32
    assert model.fc_out.out_features == 10
    defaults = build_model("mlp", (1, 8, 8), 10)
    assert [defaults.fc1.out_features, defaults.fc2.out_features] == [256, 256]
    assert not hasattr(defaults, "fc3")


def test_cnn_small_layers_and_width_multiplier():
    model = build_model("cnn_small", (1, 28, 28), 10)
    names = [name for name, _ in model.named_children()]
    assert names == [
        "normalize",
        "conv1",
        "relu1",
        "conv2",
        "relu2",
        "flatten",
        "fc1",
        "relu_fc1",
        "fc_out",
    ]
    assert (model.conv1.out_channels, model.conv2.out_channels) == (16, 32)
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == (
        (4, 4),
        (2, 2),
        (1, 1),
    )
    assert model.fc1.in_features == 32 * 7 * 7
    assert model.fc1.out_features == 100

    wide = build_model("cnn_small", (3, 32, 32), 10, width=2, linear_size=50)
    assert (wide.conv1.out_channels, wide.conv2.out_channels) == (32, 64)
    assert wide.fc1.in_features == 64 * 8 * 8
    assert wide.fc1.out_features == 50


def test_cnn7_children_and_published_shapes():
    model = build_model("cnn7", (3, 32, 32), 10).eval()
    expected = ["normalize"]
    for i in range(1, 6):
        expected += [f"conv{i}", f"bn{i}", f"relu{i}"]
    expected += ["flatten", "fc1", "bn_fc1", "relu_fc1", "fc_out"]
    assert [name for name, _ in model.named_children()] == expected

    assert [model.get_submodule(f"conv{i}").out_channels for i in range(1, 6)] == [
        64,
        64,
        128,
        128,
        128,
    ]
    assert model.fc1.in_features == 128 * 16 * 16 == 32768
    assert model.fc1.out_features == 512
    assert isinstance(model.bn_fc1, nn.BatchNorm1d)
    with torch.no_grad():
        _, features = forward_features(model, torch.rand(1, 3, 32, 32), ["relu3", "relu5"])
    assert features["relu3"].shape == (1, 128, 16, 16)
    assert features["relu5"].shape == (1, 128, 16, 16)


def test_cnn7_tin_strides_conv5_for_64x64():
    model = build_model("cnn7_tin", (3, 64, 64), 200, width=8, linear_size=16).eval()
    assert model.conv5.stride == (2, 2)
    assert build_model("cnn7", (3, 64, 64), 200, width=8, linear_size=16).conv5.stride == (1, 1)
    with torch.no_grad():
        logits, features = forward_features(model, torch.rand(1, 3, 64, 64), ["relu5"])
    assert features["relu5"].shape == (1, 16, 16, 16)
    assert logits.shape == (1, 200)
    # Default widths: the published 128 x 16 x 16 input to fc1, built without a forward pass.
    assert build_model("cnn7_tin", (3, 64, 64), 200).fc1.in_features == 128 * 16 * 16


@pytest.mark.parametrize("name", CERTIFIABLE_MODELS)
def test_certifiable_models_use_only_supported_layers(name):
    model = small_model(name, (3, 32, 32))
    assert isinstance(model, nn.Sequential)
    # Exact types: a subclass could change forward() behind the bound propagation's back.
    unsupported = [
        (path, type(module).__name__)
        for path, module in model.named_modules()
        if path and type(module) not in SUPPORTED_LAYERS
    ]
    assert unsupported == []


def test_teachers_are_not_plain_stacks():
    for name in set(MODELS) - set(CERTIFIABLE_MODELS) - set(LIPSCHITZ_MODELS):
        model = small_model(name, (3, 32, 32))
        assert any(isinstance(module, PreActBlock) for module in model.modules())


@pytest.mark.parametrize("name", MODELS)
def test_first_child_is_normalize_with_identity_default(name):
    model = small_model(name, (3, 32, 32))
    first_name, first = next(iter(model.named_children()))
    assert first_name == "normalize"
    assert isinstance(first, Normalize)
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(first(x), x)


def test_mean_and_std_are_applied():
    model = build_model("mlp", (3, 8, 8), 10, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.5])
    x = torch.rand(2, 3, 8, 8)
    expected = (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.5]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(x), expected)


@pytest.mark.parametrize(
    ("name", "options", "stages", "blocks", "channels"),
    [
        ("preact_resnet18", {"width": 64}, 4, 2, [64, 128, 256, 512]),
        ("preact_resnet18", {"width": 4}, 4, 2, [4, 8, 16, 32]),
        ("wide_resnet", {}, 3, 4, [160, 320, 640]),
        ("wide_resnet", {"depth": 16, "widen_factor": 2}, 3, 2, [32, 64, 128]),
    ],
)
def test_teacher_structure(name, options, stages, blocks, channels):
    model = build_model(name, (3, 32, 32), 10, **options)
    layer_names = [f"layer{i}" for i in range(1, stages + 1)]
    expected = ["normalize", "stem", *layer_names, "bn", "relu", "pool", "flatten", "fc_out"]
    assert [name for name, _ in model.named_children()] == expected
    assert isinstance(model.stem, nn.Conv2d) and model.stem.kernel_size == (3, 3)
    assert model.stem.stride == (1, 1)
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d)
    for layer_name, width in zip(layer_names, channels, strict=True):
        layer = model.get_submodule(layer_name)
        assert isinstance(layer, nn.Sequential)
        assert len(layer) == blocks
        assert all(isinstance(block, PreActBlock) for block in layer)
        assert layer[-1].conv2.out_channels == width
    strides = [model.get_submodule(n)[0].conv1.stride[0] for n in layer_names]
    assert strides == [1] + [2] * (stages - 1)
    assert model.fc_out.in_features == channels[-1]


def test_preact_block_identity_and_projection_shortcuts():
    torch.manual_seed(0)
    same = PreActBlock(8, 8, stride=1).eval()
    assert same.shortcut is None
    nn.init.zeros_(same.conv2.weight)  # residual branch now outputs zero
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(same(x), x)  # identity shortcut adds the raw input

    down = PreActBlock(8, 16, stride=2).eval()
    assert isinstance(down.shortcut, nn.Conv2d)
    nn.init.zeros_(down.conv2.weight)
    pre = down.relu1(down.bn1(x))
    torch.testing.assert_close(down(x), down.shortcut(pre))  # projection reads pre-activation
    assert down(x).shape == (2, 16, 3, 3)


@pytest.mark.parametrize("name", MODELS)
def test_feature_names_are_children_then_aliases(name):
    model = small_model(name, (1, 8, 8))
    children = [child_name for child_name, _ in model.named_children()]
    assert feature_names(model) == [*children, "penultimate", "logits"]


@pytest.mark.parametrize(
    ("name", "intermediate"),
    [("mlp", "relu1"), ("cnn_small", "conv2"), ("cnn7", "relu3"), ("preact_resnet18", "layer2")],
)
def test_forward_features_matches_hooks(name, intermediate):
    torch.manual_seed(0)
    model = small_model(name, (3, 32, 32)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits, features = forward_features(model, x, [intermediate, "penultimate", "logits"])
        fc_in, _ = hooked_io(model.fc_out, model, x)
        _, child_out = hooked_io(model.get_submodule(intermediate), model, x)
        reference = model(x)
    assert set(features) == {intermediate, "penultimate", "logits"}
    torch.testing.assert_close(logits, reference)
    torch.testing.assert_close(features["logits"], reference)
    torch.testing.assert_close(features["penultimate"], fc_in)
    torch.testing.assert_close(features[intermediate], child_out)


def test_forward_features_runs_each_child_once():
    model = small_model("cnn7", (1, 8, 8)).train()
    calls = []
    for _, child in model.named_children():
        child.register_forward_hook(lambda module, _inputs, _output: calls.append(module))
    forward_features(model, torch.rand(2, 1, 8, 8), ["relu1", "penultimate", "logits"])
    assert calls == list(model.children())


def test_forward_features_is_differentiable():
    torch.manual_seed(0)
    model = small_model("cnn7", (1, 8, 8)).train()
    x = torch.rand(4, 1, 8, 8)
    _, features = forward_features(model, x, ["relu2", "penultimate"])
    (features["relu2"].square().mean() + features["penultimate"].mean()).backward()
    assert model.conv1.weight.grad is not None
    assert model.conv1.weight.grad.abs().sum() > 0
    assert model.fc1.weight.grad is not None  # reached through "penultimate"
    assert model.fc_out.weight.grad is None  # after every requested feature


def test_forward_features_unknown_name_lists_available():
    model = small_model("mlp", (1, 8, 8))
    available = ", ".join(repr(n) for n in feature_names(model))
    with pytest.raises(ValueError, match="unknown feature name") as info:
        forward_features(model, torch.rand(1, 1, 8, 8), ["logits", "conv9"])
    assert "'conv9'" in str(info.value)
    assert available in str(info.value)


def test_forward_features_rejects_a_bare_string():
    model = small_model("mlp", (1, 8, 8))
    with pytest.raises(TypeError, match="iterable of feature names"):
        forward_features(model, torch.rand(1, 1, 8, 8), "logits")


def test_unknown_model_lists_models():
    with pytest.raises(ValueError, match="unknown model 'resnet50'") as info:
        build_model("resnet50", (3, 32, 32), 10)
    assert all(name in str(info.value) for name in MODELS)


@pytest.mark.parametrize(
    ("name", "options", "pattern"),
    [
        ("mlp", {"width": 0}, r"model 'mlp': option 'width' must be an int >= 1, got 0"),
        ("mlp", {"depth": -1}, r"model 'mlp': option 'depth' must be an int >= 0"),
        ("cnn_small", {"width": 1.5}, r"model 'cnn_small': option 'width' must be an int"),
        ("cnn7", {"linear_size": True}, r"model 'cnn7': option 'linear_size' must be an int"),
        ("cnn7_tin", {"width": -4}, r"model 'cnn7_tin': option 'width'"),
        ("preact_resnet18", {"width": 0}, r"model 'preact_resnet18': option 'width'"),
        ("wide_resnet", {"widen_factor": 0}, r"model 'wide_resnet': option 'widen_factor'"),
        ("mlp", {"linear_size": 10}, r"model 'mlp': unknown option\(s\) \['linear_size'\]"),
        ("cnn7", {"depth": 3}, r"model 'cnn7': unknown option\(s\) \['depth'\]"),
        ("wide_resnet", {"width": 3}, r"model 'wide_resnet': unknown option\(s\) \['width'\]"),
    ],
)
def test_bad_options_raise_naming_model_and_option(name, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_model(name, (3, 32, 32), 10, **options)


@pytest.mark.parametrize("depth", [27, 4, 0, 11])
def test_wide_resnet_rejects_depth_not_6n_plus_4(depth):
    with pytest.raises(ValueError, match=r"model 'wide_resnet': option 'depth'"):
        build_model("wide_resnet", (3, 32, 32), 10, depth=depth)


def test_wide_resnet_accepts_smallest_depth():
    model = build_model("wide_resnet", (3, 32, 32), 10, depth=10, widen_factor=1)
    assert [len(model.get_submodule(f"layer{i}")) for i in (1, 2, 3)] == [1, 1, 1]


@pytest.mark.parametrize("input_shape", [(1, 2, 2), (3, 1, 32), (3, 32, 3)])
def test_too_small_input_for_strides(input_shape):
    with pytest.raises(ValueError, match="model 'cnn_small': input spatial size is too small"):
        build_model("cnn_small", input_shape, 10)


def test_smallest_cnn_small_input_builds():
    model = build_model("cnn_small", (1, 4, 4), 10)
    assert model(torch.rand(1, 1, 4, 4)).shape == (1, 10)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"input_shape": (32, 32)}, "input_shape must be"),
        ({"input_shape": (3, 0, 32)}, "input_shape height"),
        ({"num_classes": 0}, "num_classes"),
        ({"mean": [0.5]}, "mean/std need 3 values"),
        ({"std": [1.0, 1.0, 0.0]}, "std must be > 0"),
    ],
)
def test_bad_shape_classes_or_normalisation(kwargs, pattern):
    arguments = {"input_shape": (3, 32, 32), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        build_model("cnn7", **arguments, width=4, linear_size=16)
