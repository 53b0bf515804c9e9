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
    with pytest.raises(InputError, match=r"1 wrong shape \(conv2.conv.weight \(checkpoint \[32, 64, 1, 1\]") as caught:
        idp.create_model("v1", weights=path)
    message = str(caught.value)  # the names are all the model's: no other library's layout is blamed
    assert "every key name is googlenet's" in message and "layout" not in message, message


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


KEY = "inception3a.branch1.conv.weight"


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda t: t.to_sparse(), f"tensor {KEY} is sparse (sparse_coo)"),
        (lambda t: t.to(torch.complex64), f"tensor {KEY} is complex (complex64)"),
    ],
    ids=["sparse", "complex"],
)
def test_tensors_that_are_not_dense_real_floats_are_refused_by_name(tmp_path, googlenet_sd, change, expected):
    sd = dict(googlenet_sd[0])
    sd[KEY] = change(sd[KEY])
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    with pytest.raises(InputError) as caught:
        idp.create_model("v1", weights=path)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_integer_weights_are_refused_but_integer_buffers_and_half_precision_load(tmp_path, googlenet_sd):
    """Integers for float weights would be cast into nonsense; BatchNorm's num_batches_tracked is int64 by right,
    and an fp16 or bf16 checkpoint is a float one."""
    sd = googlenet_sd[0]
    path = tmp_path / "int.pth"
    torch.save({**sd, KEY: sd[KEY].to(torch.int32)}, path)
    with pytest.raises(InputError, match=f"tensor {KEY} is int32, where the model has float32 weights"):
        idp.create_model("v1", weights=path)
    assert sd["conv1.bn.num_batches_tracked"].dtype == torch.int64
    for dtype in (torch.float16, torch.bfloat16):
        path = tmp_path / f"{dtype}.pth"
        torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}, path)
        model = idp.create_model("v1", weights=path)
        assert torch.equal(model.state_dict()[KEY], sd[KEY].to(dtype).float())


class _Touches:
    """Unpickled, it creates a file: the proof that a pickle was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_a_plain_pickle_is_named_and_not_unpickled(tmp_path, googlenet_sd):
    import pickle

    sd = googlenet_sd[0]
    path, marker = tmp_path / "pickled.pth", tmp_path / "unpickled"
    with open(path, "wb") as f:
        pickle.dump({**sd, "extra": _Touches(marker)}, f)
    with pytest.raises(InputError, match="is a plain Python pickle, not a torch.save or safetensors checkpoint"):
        idp.create_model("v1", weights=path)
    assert not marker.exists()
    legacy = tmp_path / "legacy.pth"  # torch.save's pre-zip format is a pickle too, and a checkpoint
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    assert _same_weights(idp.create_model("v1", weights=legacy), sd)


@pytest.mark.parametrize("dropped", [["inception3a.branch1.bn.bias"], [KEY, "fc.bias"]], ids=["one", "two"])
def test_missing_keys_are_named_as_missing_not_as_another_layout(tmp_path, googlenet_sd, dropped):
    path = tmp_path / "incomplete.pth"
    torch.save({k: v for k, v in googlenet_sd[0].items() if k not in dropped}, path)
    with pytest.raises(InputError) as caught:
        idp.create_model("v1", weights=path)
    message = str(caught.value)
    assert f"missing key{'s' if len(dropped) > 1 else ''} {', '.join(repr(k) for k in dropped)}" in message
    assert "layout" not in message and "other layer sizes" not in message and "incomplete" in message
    renamed = tmp_path / "renamed.pth"  # a genuinely foreign layout is still named as one
    torch.save({k.replace(".conv.", ".c."): v for k, v in googlenet_sd[0].items()}, renamed)
    with pytest.raises(InputError, match="another library's layout"):
        idp.create_model("v1", weights=renamed)
