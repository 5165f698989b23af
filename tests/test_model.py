"""The model factory reproduces torchvision's ViTs exactly."""

import pytest
import torch
import torchvision

from acousticsense.model import ARCHITECTURES, build_model


def test_torchvision_vit_b_16_state_dict_gives_identical_logits():
    torch.manual_seed(0)
    reference = torchvision.models.vit_b_16(weights=None, num_classes=10).eval()
    with torch.no_grad():
        reference.heads.head.weight.normal_(0, 0.02)
    ours = build_model("vit_b_16", num_classes=10, image_size=224).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        expected, got = reference(x), ours(x)
    assert torch.equal(expected, got)
    assert expected.std() > 0  # the head is not the all-zero initialisation


@pytest.mark.parametrize("name,params_m", [("vit_mini_16", 3.05), ("vit_ti_16", 5.72), ("vit_s_16", 21.7), ("vit_b_16", 85.8)])
def test_presets_have_the_published_sizes(name, params_m):
    model = build_model(name, num_classes=1000, image_size=224)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(params_m, rel=0.02)
    assert set(ARCHITECTURES) >= {name}


def test_mlp_head_layout_and_smaller_images():
    model = build_model("vit_ti_16", 16, image_size=64, head={"type": "mlp", "hidden": [289, 110, 42], "dropout": 0.1})
    keys = [k for k in model.state_dict() if k.startswith("heads.")]
    assert keys == [f"heads.head.{i}.{p}" for i in (1, 4, 7, 9) for p in ("weight", "bias")]
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 16)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(name="vit_h_99", num_classes=3), "unknown architecture 'vit_h_99'"),
        (dict(name="vit_ti_16", num_classes=3, image_size=100), "not a multiple of the patch size"),
        (dict(name="vit_ti_16", num_classes=3, head={"type": "conv"}), "unknown head type 'conv'"),
    ],
)
def test_bad_specs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)
