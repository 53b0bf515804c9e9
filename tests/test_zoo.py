import pytest
import torch
from conftest import REFERENCE_PARAMS, VARIANTS
from torch import nn

import inception_deploy as idp
from inception_deploy.core.errors import InputError
from inception_deploy.models import build_model, count_parameters


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_counts_match_the_reference(name):
    eval_params, aux_params = REFERENCE_PARAMS[name]
    assert count_parameters(build_model(name)) == eval_params
    spec = idp.get_spec(name)
    assert spec.params == eval_params and spec.params_with_aux == aux_params
    if aux_params is not None:
        assert count_parameters(build_model(name, aux_logits=True)) == aux_params
    else:
        with pytest.raises(InputError, match="no auxiliary head"):
            build_model(name, aux_logits=True)


def _macs(model: nn.Module, input_size) -> float:
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output[0].numel() * k
        else:
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *input_size))
    for h in handles:
        h.remove()
    return total / 1e9


@pytest.mark.parametrize("name", VARIANTS)
def test_eval_returns_logits_and_gmacs_match_the_spec(name):
    spec = idp.get_spec(name)
    model = build_model(name, num_classes=10)
    with torch.no_grad():
        y = model(torch.randn(2, *spec.input_size))
    assert isinstance(y, torch.Tensor) and y.shape == (2, 10)
    assert _macs(build_model(name), spec.input_size) == pytest.approx(spec.gmacs, abs=0.005)


@pytest.mark.parametrize("name", [n for n in VARIANTS if REFERENCE_PARAMS[n][1]])
def test_aux_heads_run_only_in_training(name):
    spec = idp.get_spec(name)
    model = idp.create_model(name, num_classes=7, aux_logits=True)
    x = torch.randn(2, *spec.input_size)
    model.train()
    outputs = model(x)
    assert isinstance(outputs, tuple) and all(o.shape == (2, 7) for o in outputs)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 7)


def test_registry_resolves_aliases_and_rejects_unknown_names():
    assert [s.name for s in idp.list_models()] == VARIANTS
    for alias, name in {"v1": "googlenet", "V3": "inception_v3", "irv2": "inception_resnet_v2",
                        "inception-v4": "inception_v4", "v2": "inception_v2"}.items():
        assert idp.resolve_name(alias) == name
    with pytest.raises(InputError, match="unknown variant 'v9'.*googlenet \\(v1\\)"):
        idp.get_spec("v9")


def test_specs_are_frozen_and_carry_preprocessing():
    spec = idp.get_spec("v4")
    with pytest.raises(AttributeError):
        spec.params = 1
    assert build_model("v4").spec is spec
    assert spec.preprocessing.interpolation == "bicubic" and spec.preprocessing.mean == (0.5, 0.5, 0.5)
    assert idp.get_spec("v3").preprocessing.resize == 342 and idp.get_spec("v1").input_size == (3, 224, 224)


def test_untrained_models_say_so():
    assert idp.create_model("v1").untrained is True


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_transform_input_constants_are_buffers_made_once(name, monkeypatch):
    """googlenet and v3 map their input to the TF range with constants that move with the model (to a GPU, to fp16)
    once: no tensor is made from host data on each forward (on a GPU that was two blocking copies per call)."""
    model = build_model(name)
    buffers = dict(model.named_buffers())
    assert {"tf_range.scale", "tf_range.shift"} <= set(buffers)
    assert not any(k.startswith("tf_range.") for k in model.state_dict())  # checkpoints load unchanged
    assert build_model(name).to(torch.float16).tf_range.scale.dtype == torch.float16
    assert build_model(name, transform_input=False).tf_range is None
    x = torch.randn(1, 3, *idp.get_spec(name).input_size[1:])
    expected = torch.cat([x[:, :1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5,  # torchvision's own formula
                          x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5,
                          x[:, 2:] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5], 1)
    assert torch.equal(model.tf_range(x), expected)

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor made from host data on the forward path")

    monkeypatch.setattr(torch.Tensor, "new_tensor", refuse)
    monkeypatch.setattr(torch, "tensor", refuse)
    with torch.inference_mode():
        assert model(x).shape == (1, 1000)
