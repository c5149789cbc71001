import json

import pytest
import torch

from byol_lite.data.transforms import normalize
from byol_lite.method.backbones import build_backbone, save_backbone
from byol_lite.segmentation.evaluation import predict_masks
from byol_lite.segmentation.model import build_segmentation_model, load_segmentation_model, save_segmentation_model

SMALL = dict(backbone="resnet18", width=8, image_size=32)


@pytest.mark.parametrize("head", ["fcn", "deeplabv3", "linear"])
def test_logits_come_back_at_the_input_size(head):
    torch.manual_seed(0)
    model = build_segmentation_model(head=head, num_classes=5, aux=True, **SMALL)
    x = torch.randn(2, 3, 37, 29)          # odd sizes: the bilinear upsampling must restore them
    model.train()
    out = model(x)
    assert out["out"].shape == (2, 5, 37, 29) and out["aux"].shape == (2, 5, 37, 29)
    model.eval()
    assert set(model(x)) == {"out"}        # the auxiliary head is a training signal only


def test_output_stride_through_dilation_or_the_small_stem():
    r50 = dict(backbone="resnet50", stem="imagenet", width=8)
    assert build_segmentation_model(**r50).backbone.output_stride == 16      # the BYOL paper's VOC setting
    m8 = build_segmentation_model(output_stride=8, **r50)
    assert m8.backbone.output_stride == 8
    assert m8.backbone(torch.randn(1, 3, 64, 64))[1].shape[-1] == 8
    assert build_segmentation_model(stem="small", **{k: v for k, v in SMALL.items() if k != "image_size"}
                                    ).backbone.output_stride == 8
    with pytest.raises(ValueError, match="BasicBlocks.*stem='small'"):
        build_segmentation_model(backbone="resnet18", stem="imagenet", width=8, output_stride=16)


def test_linear_probe_trains_only_the_head():
    torch.manual_seed(0)
    model = build_segmentation_model(head="linear", freeze_backbone=True, num_classes=3, **SMALL)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainable = model.trainable_parameters()
    assert [p.shape for p in trainable] == [(3, 64, 1, 1), (3,)]   # one 1x1 conv on 8 * 8 channels
    opt = torch.optim.SGD(trainable, lr=0.1)
    model.train()
    assert not model.backbone.training                              # BatchNorm statistics stay put
    loss = model(torch.randn(4, 3, 32, 32))["out"].logsumexp(1).mean()
    loss.backward()
    opt.step()
    assert all(torch.equal(frozen[k], v) for k, v in model.backbone.state_dict().items())
    assert model.classifier.weight.grad is not None


def test_init_from_a_pretraining_run_and_from_a_state_dict(tmp_path):
    torch.manual_seed(1)
    encoder = build_backbone("resnet18", stem="small", width=8)
    run = tmp_path / "pretrain"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"backbone": "resnet18", "stem": "small", "width": 8,
                                                 "image_size": 32}))
    save_backbone(encoder, run / "backbone.pt")
    # the run's own architecture wins over the (default) arguments
    from_run = build_segmentation_model(init=str(run))
    from_file = build_segmentation_model(init=str(run / "backbone.pt"), **SMALL)
    for model in (from_run, from_file):
        assert (model.backbone.arch, model.backbone.stem, model.backbone.width) == ("resnet18", "small", 8)
        for k, v in encoder.state_dict().items():
            assert torch.equal(model.backbone.state_dict()[k], v), k
    with pytest.raises(ValueError, match="backbone.pt does not fit backbone=resnet18 stem=small width=16"):
        build_segmentation_model(init=str(run / "backbone.pt"), backbone="resnet18", width=16, image_size=32)
    with pytest.raises(FileNotFoundError, match="no such pretraining run folder or weights file"):
        build_segmentation_model(init=str(tmp_path / "nowhere"), **SMALL)


def test_dilated_backbone_keeps_the_pretrained_weights(tmp_path):
    torch.manual_seed(2)
    encoder = build_backbone("resnet50", stem="imagenet", width=8)
    save_backbone(encoder, tmp_path / "r50.pt")
    model = build_segmentation_model(init=str(tmp_path / "r50.pt"), backbone="resnet50", stem="imagenet", width=8,
                                     output_stride=8)
    assert model.backbone.output_stride == 8
    for k, v in encoder.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k


def test_saved_model_rebuilds_identically(tmp_path):
    torch.manual_seed(3)
    model = build_segmentation_model(head="deeplabv3", aux=True, num_classes=4, atrous_rates=(1, 2, 3), **SMALL)
    save_segmentation_model(model, tmp_path / "model.pt")
    loaded = load_segmentation_model(tmp_path / "model.pt")
    assert loaded.spec == model.spec
    images = torch.randint(0, 256, (2, 3, 30, 34), dtype=torch.uint8)
    assert torch.equal(predict_masks(loaded, images), predict_masks(model, images))
    model.eval()
    assert torch.equal(predict_masks(model, images), model(normalize(images))["out"].argmax(1))
    with pytest.raises(ValueError, match="not a segmentation checkpoint"):
        save_backbone(model.backbone, tmp_path / "backbone.pt")
        load_segmentation_model(tmp_path / "backbone.pt")


def test_pictures(tmp_path):
    import math

    from byol_lite.segmentation.viz import plot_class_iou, plot_confusion_matrix, show_segmentation

    images = torch.randint(0, 256, (3, 3, 24, 24), dtype=torch.uint8)
    masks = torch.randint(0, 4, (3, 24, 24))
    masks[:, :2] = 255
    fig = show_segmentation(images, masks, masks.flip(-1), class_names=["bg", "a", "b", "c"], max_images=2)
    assert len(fig.axes) == 6
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["bg", "a", "b", "c", "void (255)"]
    fig = plot_class_iou([0.5, math.nan, 1.0], ["bg", "a", "b"])
    assert "absent" in [t.get_text() for t in fig.axes[0].texts]
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "mIoU 0.750"
    fig = plot_confusion_matrix(torch.tensor([[3, 1], [0, 0]]), ["bg", "a"])
    assert fig.axes[0].images[0].get_array().tolist() == [[0.75, 0.25], [0.0, 0.0]]
    fig.savefig(tmp_path / "cm.png")
