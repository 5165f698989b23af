"""The model factory reproduces torchvision's ViTs exactly."""

import pytest
import torch
import torchvision

from acousticsense.errors import ParameterError
from acousticsense.config import ARCHITECTURES
from acousticsense.model import FusedInference, build_model, inference_model


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
        (dict(name="vit_ti_16", num_classes=3, image_size=100), "image_size must be a multiple of the patch size 16 up to 1024, not 100"),
        (dict(name="vit_ti_16", num_classes=3, image_size=0), "image_size must be a multiple"),
        (dict(name="vit_ti_16", num_classes=3, image_size=-16), "image_size must be a multiple"),
        (dict(name="vit_ti_16", num_classes=0), "num_classes must be a whole number from 1 to 10,000, not 0"),
        (dict(name="vit_ti_16", num_classes=-1), "num_classes must be"),
        (dict(name="vit_ti_16", num_classes=3, head={"type": "conv"}), "head must be {'type': one of linear, mlp, ...}"),
        (dict(name="vit_ti_16", num_classes=3, head="mlp"), "head must be"),
        (dict(name="vit_ti_16", num_classes=3, head={"type": "mlp"}), "an mlp head needs 'hidden'"),
        (dict(name="vit_ti_16", num_classes=3, dropout=1.5), r"dropout must be a number in \[0, 1\)"),
    ],
)
def test_bad_specs_are_refused(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        build_model(**kwargs)


def test_the_model_loads_without_torch_dynamo_which_still_works_after():
    """torchvision imports torch._dynamo (1-3 s) for one function that ViTs never call: a fresh process skips it."""
    import subprocess
    import sys

    code = (
        "import sys; import acousticsense.model as m; import torchvision.models.vision_transformer as v\n"
        "assert m.VisionTransformer is v.VisionTransformer and 'torch._dynamo' not in sys.modules\n"
        "roi = sys.modules['torchvision.ops.roi_align']\n"
        "assert roi.is_compile_supported('cpu') and 'torch._dynamo' in sys.modules\n"
        "import torch._dynamo.utils as real; assert real.__file__.endswith('utils.py') and hasattr(real, 'is_compile_supported')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_fused_inference_gives_the_models_numbers_and_shares_its_weights():
    torch.manual_seed(1)
    model = build_model("vit_s_16", num_classes=5, image_size=64, head={"type": "mlp", "hidden": [32]}).eval()
    for p in model.heads.parameters():
        torch.nn.init.normal_(p, std=0.5)
    model.train()
    fused = inference_model(model)
    assert isinstance(fused, FusedInference) and all(m.training for m in model.modules())  # building it changes no mode
    model.eval()
    with pytest.raises(ParameterError, match=r"images of \(48, 48\) pixels; this model takes 64 x 64"):
        fused(torch.zeros(1, 3, 48, 48))
    odd, linear = build_model("vit_mini_16", 5, image_size=64), torch.nn.Linear(2, 2)  # 3 heads: PyTorch fuses nothing
    assert inference_model(odd) is odd and inference_model(linear) is linear
    assert {id(p) for p in fused.parameters()} == {id(p) for p in model.parameters()}  # nothing copied
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode(), torch.profiler.profile() as prof:
        want, got = model(x), fused(x)
    assert want.std() > 0.1 and (got - want).abs().max() < 1e-5
    ran = {e.key for e in prof.key_averages()}
    assert "aten::_transformer_encoder_layer_fwd" in ran
    with torch.inference_mode():  # bf16 weights swapped in, as Classifier.forward does
        weights = {n: p.bfloat16() for n, p in fused.named_parameters()}
        half = torch.func.functional_call(fused, weights, (x.bfloat16(),))
    assert half.dtype == torch.bfloat16 and (half.float() - want).abs().max() < 0.1 * want.abs().max()
    assert all(type(p) is torch.nn.Parameter and p.dtype == torch.float32 for p in model.parameters())  # its own put back
    with torch.no_grad():  # a change to the model is the view's: nothing was copied
        model.encoder.layers[0].ln_1.weight.mul_(3)
    with torch.inference_mode():
        assert (fused(x) - model(x)).abs().max() < 1e-5 and (model(x) - want).abs().max() > 1e-3
