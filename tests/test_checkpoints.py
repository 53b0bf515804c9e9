"""Loading the checkpoints people have, and refusing the wrong ones in one readable line."""

import pytest
import torch
from conftest import PUBLIC_VARIANTS
from safetensors.torch import save_file

import inception_deploy as idp
from inception_deploy.core.compare import difference
from inception_deploy.core.errors import InputError
from inception_deploy.models import build_model


@pytest.mark.parametrize("name", PUBLIC_VARIANTS)
def test_library_checkpoints_load_and_compute_the_same(name, library_checkpoints):
    path, reference, x = library_checkpoints(name)
    ours = idp.create_model(name, weights=path)
    with torch.no_grad():
        diff = difference(reference(x).numpy(), ours(x).numpy())
    assert diff.scaled < 1e-6, diff  # same arithmetic: equal up to float rounding


@pytest.fixture(scope="module")
def googlenet_sd(library_checkpoints):
    path, _, _ = library_checkpoints("googlenet")
    return torch.load(path), path


def _same_weights(model, sd):
    own = model.state_dict()
    return all(torch.equal(own[k], sd[k]) for k in own if k in sd)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {}},
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
        lambda sd: {"model_state_dict": sd},
    ],
    ids=["state_dict", "model+module.", "torch.compile", "model_state_dict"],
)
def test_usual_wrappers_and_prefixes_are_unwrapped(tmp_path, googlenet_sd, wrap):
    sd, _ = googlenet_sd
    path = tmp_path / "wrapped.pt"
    torch.save(wrap(sd), path)
    assert _same_weights(idp.create_model("v1", weights=path), sd)


def test_safetensors_and_checkpoints_without_aux_heads(tmp_path, googlenet_sd):
    sd, _ = googlenet_sd
    no_aux = {k: v.contiguous() for k, v in sd.items() if not k.startswith(("aux1.", "aux2."))}
    path = tmp_path / "g.safetensors"
    save_file(no_aux, str(path))
    model = idp.create_model("googlenet", weights=path)
    assert _same_weights(model, sd) and model.untrained is False
    # asked for aux heads, a checkpoint without them still loads: the heads stay at their init
    with_aux = idp.create_model("googlenet", weights=path, aux_logits=True)
    assert with_aux.aux1 is not None and _same_weights(with_aux, no_aux)


def test_head_size_comes_from_the_checkpoint_or_is_checked(tmp_path, googlenet_sd):
    sd = dict(googlenet_sd[0])
    sd["fc.weight"], sd["fc.bias"] = sd["fc.weight"][:10].clone(), sd["fc.bias"][:10].clone()
    path = tmp_path / "ten.pth"
    torch.save(sd, path)
    assert idp.create_model("v1", weights=path).fc.out_features == 10
    assert idp.create_model("v1", weights=path, num_classes=10).fc.out_features == 10
    with pytest.raises(InputError, match="--num-classes 5 disagrees .* head has 10 classes"):
        idp.create_model("v1", weights=path, num_classes=5)


def test_a_checkpoint_of_another_variant_is_named(library_checkpoints):
    path, _, _ = library_checkpoints("inception_v4")
    with pytest.raises(InputError) as caught:
        idp.create_model("v3", weights=path)
    message = str(caught.value)
    assert "does not fit inception_v3" in message and "missing" in message and "unexpected" in message
    assert "looks like a checkpoint of inception_v4" in message and "export v4" in message
    assert "\n" not in message


def test_a_seed_layout_v2_checkpoint_round_trips(tmp_path):
    model = build_model("v2", aux_logits=True)
    path = tmp_path / "v2.pth"
    torch.save(model.state_dict(), path)
    assert "aux_classifier.classifier.0.weight" in model.state_dict()
    assert _same_weights(idp.create_model("v2", weights=path), model.state_dict())


def test_a_changed_layer_width_is_reported_as_wrong_shape(tmp_path, googlenet_sd):
    sd = dict(googlenet_sd[0])
    sd["conv2.conv.weight"] = torch.zeros(32, 64, 1, 1)
    path = tmp_path / "narrow.pth"
    torch.save(sd, path)
    with pytest.raises(InputError, match=r"1 wrong shape \(conv2.conv.weight \(checkpoint \[32, 64, 1, 1\]"):
        idp.create_model("v1", weights=path)


def _truncated(src, dst, keep=0.5):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


class Unpicklable:
    pass


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d, src: d / "missing.pth", "does not exist"),
        (lambda d, src: d, "is not a file"),
        (lambda d, src: _truncated(src, d / "cut.pth"), "corrupt or truncated"),
        (
            lambda d, src: (d / "noise.pth").write_bytes(b"\x80\x02junk" * 100) and d / "noise.pth",
            "corrupt or truncated",
        ),
        (
            lambda d, src: (d / "x.safetensors").write_bytes(b"not a safetensors file") and d / "x.safetensors",
            "corrupt or truncated",
        ),
        (lambda d, src: torch.save({"model": Unpicklable()}, d / "obj.pth") or d / "obj.pth", "pickled Python objects"),
        (lambda d, src: torch.save({"epoch": 1}, d / "empty.pth") or d / "empty.pth", "holds no state dict"),
    ],
    ids=["missing", "directory", "truncated", "garbage", "bad-safetensors", "pickled-object", "no-tensors"],
)
def test_unreadable_checkpoints_give_one_line(tmp_path, googlenet_sd, make, expected):
    path = make(tmp_path, googlenet_sd[1])
    with pytest.raises(InputError) as caught:
        idp.create_model("v1", weights=path)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
