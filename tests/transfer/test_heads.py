"""Backbone options and torchvision's heads on our stage features: the sizes the rules promise."""
import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from bagoftricks.errors import UsageError
from bagoftricks.models import build_model
from bagoftricks.models.stages import features
from bagoftricks.transfer.backbone import freeze_bn, layer_names, prepare_backbone
from bagoftricks.transfer.heads import anchor_sizes, detector, fpn_levels, segmenter
from bagoftricks.transfer.job import param_groups


def body(arch="resnet20", width=4, in_channels=1):
    torch.manual_seed(0)
    return features(build_model(arch, 10, in_channels, variant="D", width=width))


def test_anchor_rule_and_levels_small_and_imagenet_resnets():
    small = body()
    assert small.strides == [1, 2, 4]
    assert fpn_levels(small) == ["layer2", "layer3"]                     # the stride-1 stage is left out
    assert anchor_sizes([2, 4, 8], 64, 8.0) == ((16,), (32,), (64,))
    assert anchor_sizes([2, 4, 8], 48, 8.0) == ((16,), (32,), (48,))    # capped at the image size
    big = features(build_model("resnet18", 10, 3, variant="D", width=8))
    assert fpn_levels(big) == ["layer1", "layer2", "layer3", "layer4"]
    assert anchor_sizes([4, 8, 16, 32, 64], 800, 8.0) == ((32,), (64,), (128,), (256,), (512,))  # torchvision's


def test_detector_trains_and_predicts_with_boxes_in_the_image():
    m = detector(body(), 11, 32, 16, 8.0, [72.9], [90.0])
    assert m.rpn.anchor_generator.sizes == ((16,), (32,), (32,))  # strides 2, 4 and the pooled 8; 64 capped at 32
    assert m.roi_heads.box_roi_pool.canonical_scale == 128
    images = [torch.rand(1, 32, 32) * 255 for _ in range(2)]
    targets = [{"boxes": torch.tensor([[2.0, 3, 20, 25]]), "labels": torch.tensor([4])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = m(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert m.backbone.body.layer3[0].conv1.weight.grad is not None
    m.eval()
    with torch.no_grad():
        out = m(images)
    for o in out:
        assert o["boxes"].shape[1] == 4 and (o["boxes"] >= 0).all() and (o["boxes"] <= 32).all()
        assert ((o["labels"] >= 1) & (o["labels"] <= 10)).all()


@pytest.mark.parametrize("aux", [True, False])
def test_fcn_output_at_input_size_with_optional_aux(aux):
    m = segmenter(body(), 11, aux=aux)
    out = m(torch.randn(2, 1, 24, 24))
    assert out["out"].shape == (2, 11, 24, 24)
    assert ("aux" in out) == aux and (m.aux_classifier is not None) == aux
    if aux:
        assert out["aux"].shape == (2, 11, 24, 24)
        assert m.aux_classifier[0].in_channels == body().channels[-2]


def test_frozen_bn_keeps_values_and_stops_statistics():
    b = body()
    b.layer1[0].bn1.running_mean.fill_(0.5)
    x = torch.randn(2, 1, 16, 16)
    b.eval()
    want = b(x)["layer3"]
    freeze_bn(b)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in b.modules())
    assert isinstance(b.layer1[0].bn1, FrozenBatchNorm2d) and float(b.layer1[0].bn1.running_mean[0]) == 0.5
    b.train()
    assert torch.allclose(b(x)["layer3"], want, atol=1e-5)   # train mode changes nothing now


def test_trainable_layers_count_from_the_last_stage_to_the_stem():
    b = body()
    assert layer_names(b) == ["layer3", "layer2", "layer1", "stem"]
    for k in range(5):
        b = prepare_backbone(body(), frozen_bn=False, trainable_layers=k)
        trained = {n.split(".")[0] for n, p in b.named_parameters() if p.requires_grad}
        expect = {"layer3", "layer2", "layer1", "conv1", "bn1"}
        expect = {n for n in expect if (n if n.startswith("layer") else "stem") in layer_names(b)[:k]}
        assert trained == expect
    with pytest.raises(UsageError, match="transfer.trainable_layers: the backbone has 4 layers"):
        prepare_backbone(body(), frozen_bn=False, trainable_layers=5)


def test_param_groups_split_backbone_and_heads():
    b = prepare_backbone(body(), frozen_bn=True, trainable_layers=1)
    m = segmenter(b, 11, aux=True)
    groups = param_groups(m, b, 0.1)
    assert [g["name"] for g in groups] == ["backbone", "heads"] and groups[0]["lr_mult"] == 0.1
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in b.layer3.parameters()}
    heads = {id(p) for p in m.classifier.parameters()} | {id(p) for p in m.aux_classifier.parameters()}
    assert {id(p) for p in groups[1]["params"]} == heads


def test_deeplabv3_head_rates_fit_the_map_and_output_at_input_size():
    from bagoftricks.transfer.heads import aspp_rates
    assert aspp_rates(16, 513) == (6, 12, 18)          # DeepLabV3's own rates at output stride 16
    assert aspp_rates(4, 48) == (2, 4, 7) and aspp_rates(4, 8) == (1, 2, 3)
    m = segmenter(body(), 11, aux=True, head="deeplabv3", image_size=24)
    assert type(m).__name__ == "DeepLabV3" and m.classifier[0].convs[1][0].dilation == (1, 1)
    assert m.classifier[0].convs[2][0].dilation == (2, 2)   # rates (1, 2, 3) on a 6-pixel map
    out = m(torch.randn(2, 1, 24, 24))
    assert out["out"].shape == (2, 11, 24, 24) and out["aux"].shape == (2, 11, 24, 24)
