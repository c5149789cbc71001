import pytest
import torch
import torchvision

from byol_lite.method.backbones import backbone_from_run, build_backbone, load_backbone, save_backbone


@pytest.mark.parametrize("arch,feats", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_pooled_and_feature_map(arch, feats):
    net = build_backbone(arch, image_size=224).eval()
    pooled, fmap = net(torch.randn(2, 3, 64, 64))
    assert pooled.shape == (2, feats) and fmap.shape == (2, feats, 2, 2)
    assert net.output_stride == 32 and net.num_features == feats


def test_small_input_stem_keeps_resolution():
    net = build_backbone("resnet18", image_size=64, width=16)
    assert net.stem == "small" and isinstance(net.maxpool, torch.nn.Identity)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    pooled, fmap = net(torch.randn(2, 3, 64, 64))
    assert fmap.shape == (2, 128, 8, 8) and pooled.shape == (2, 128) and net.output_stride == 8


def test_dilation_for_bottleneck_blocks():
    net = build_backbone("resnet50", stem="imagenet", dilate=(False, True, True))
    assert net.output_stride == 8
    assert net(torch.randn(1, 3, 64, 64))[1].shape[-1] == 8


def test_state_dict_is_torchvision_compatible(tmp_path):
    ours = build_backbone("resnet18", stem="imagenet")
    save_backbone(ours, tmp_path / "b.pt")
    tv = torchvision.models.resnet18()
    missing, unexpected = tv.load_state_dict(torch.load(tmp_path / "b.pt", weights_only=True), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    # and back: a torchvision checkpoint (with fc) loads into ours, same features
    torch.save(tv.state_dict(), tmp_path / "tv.pt")
    again = load_backbone(build_backbone("resnet18", stem="imagenet"), tmp_path / "tv.pt").eval()
    tv.eval()
    x = torch.randn(1, 3, 64, 64)
    body = torch.nn.Sequential(*list(tv.children())[:-1])
    torch.testing.assert_close(again(x)[0], body(x).flatten(1))


def test_backbone_from_run_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        backbone_from_run(tmp_path)


def test_unknown_arch():
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50"):
        build_backbone("vgg16")
