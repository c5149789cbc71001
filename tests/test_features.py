import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from byol_lite.method.backbones import build_backbone
from byol_lite.data.transforms import normalize
from byol_lite.segmentation.features import (cell_labels, dense_features,
                                             estimate_batchnorm_statistics,
                                             feature_measures,
                                             nearest_patches, object_pixel,
                                             random_baselines,
                                             pca_rgb, query_separation,
                                             retrieval_precision,
                                             position_share, separation_auc,
                                             similarity_map)
from byol_lite.segmentation.viz import show_features, show_nearest_patches


def two_clusters(seed=0):
    """Image 0: left half cluster A, right half B; image 1: all A. A has
    channel 0 at +5, B at -5; small noise everywhere."""
    g = torch.Generator().manual_seed(seed)
    f = 0.1 * torch.randn(2, 16, 6, 6, generator=g)
    is_a = torch.zeros(2, 6, 6, dtype=torch.bool)
    is_a[0, :, :3] = True
    is_a[1] = True
    f[:, 0] += torch.where(is_a, 5.0, -5.0)
    return f, is_a


def test_pca_rgb_colours_two_clusters_apart_and_alike_across_images():
    f, is_a = two_clusters()
    rgb = pca_rgb(f)
    assert rgb.shape == (2, 3, 6, 6) and 0 <= rgb.min() and rgb.max() <= 1
    red = rgb[:, 0]                  # the first component: A against B
    # the sign rule: channel 0 is the first axis' largest loading, positive,
    # so the cluster with the larger channel 0 is the redder one
    assert red[is_a].min() > 0.9 and red[~is_a].max() < 0.1
    assert torch.equal(pca_rgb(f), rgb)                      # deterministic
    # jointly fitted: image 1 (all A) is as red as image 0's A half; green
    # and blue are noise components, each stretched to the full range
    assert red[1].min() > 0.9
    assert rgb[:, 1:].std() > 0.15


def test_pca_rgb_does_not_depend_on_the_order_of_the_images():
    f = torch.randn(3, 8, 5, 5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(pca_rgb(f[[2, 0, 1]]), pca_rgb(f)[[2, 0, 1]],
                          atol=1e-4)
    # flipping the features flips the colours: the sign is the data's, not
    # the SVD's whim
    assert torch.allclose(pca_rgb(-f)[:, 0], 1 - pca_rgb(f)[:, 0], atol=1e-4)


def test_pca_rgb_fits_on_the_masked_pixels_only():
    f, is_a = two_clusters()
    only_b = ~is_a
    rgb = pca_rgb(f, mask=only_b)     # fitted within B: channel 0 is noise
    assert rgb[:, 0][only_b].std() > 0.15     # B's noise now spans red
    assert pca_rgb(f)[:, 0][only_b].std() < 0.05   # fitted on all: B is dark


def test_similarity_map_is_one_at_the_query_and_the_cosine_elsewhere():
    f = torch.randn(3, 8, 4, 5, generator=torch.Generator().manual_seed(2))
    sim = similarity_map(f, 1, 2, 3)
    assert sim.shape == (3, 4, 5)
    assert torch.isclose(sim[1, 2, 3], torch.tensor(1.0))
    direct = F.cosine_similarity(f, f[1, :, 2, 3][None, :, None, None], dim=1)
    assert torch.allclose(sim, direct, atol=1e-6)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_a_patch_copied_into_another_image_is_found_where_it_was_copied(size):
    f = torch.randn(4, 8, 7, 7, generator=torch.Generator().manual_seed(3))
    f[2, :, 4:4 + size, 3:3 + size] = 2 * f[0, :, 1:1 + size, 2:2 + size]
    found = nearest_patches(f, 0, 1, 2, size=size, k=3)
    assert len(found) == 3 and found[0][:3] == (2, 4, 3)
    assert found[0].score == pytest.approx(1.0, abs=1e-5)
    assert [m.score for m in found] == sorted((m.score for m in found),
                                              reverse=True)
    assert all(m.image != 0 for m in found)
    mine = nearest_patches(f, 0, 1, 2, size=size, k=1, exclude_image=False)
    assert mine[0][:3] == (0, 1, 2)
    with pytest.raises(ValueError):
        nearest_patches(f, 0, 7 - size + 1, 0, size=size)


def test_nearest_patch_scores_are_mean_pixel_cosines():
    f = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(4))
    m = nearest_patches(f, 0, 0, 0, size=2, k=4)
    for match in m:
        cos = [float(similarity_map(f, 0, dy, dx)[match.image, match.y + dy,
                                                 match.x + dx])
               for dy, dx in itertools.product(range(2), range(2))]
        assert match.score == pytest.approx(np.mean(cos), abs=1e-5)


def test_object_pixel_lies_inside_the_object():
    mask = torch.zeros(40, 40, dtype=torch.long)
    mask[8:32, 16:40] = 3
    mask[8:32, 16] = 255                                     # a void border
    y, x, cls = object_pixel(mask, (5, 5))
    # full cells: rows 1-3, columns 3-4 (column 2 has the void border);
    # the innermost of them
    assert (y, x, cls) == (2, 3, 3)
    assert object_pixel(torch.zeros(40, 40, dtype=torch.long), (5, 5))[2] == 0


def test_separation_auc_is_the_pairwise_ranking_probability():
    g = torch.Generator().manual_seed(5)
    mask = torch.randint(0, 3, (8, 8), generator=g)
    mask[0, 0] = 255
    sim = torch.randint(0, 4, (8, 8), generator=g).float()   # with ties
    auc = separation_auc(sim, mask, positive=2, negative=0)
    pos, neg = sim[mask == 2], sim[mask == 0]
    wins = ((pos[:, None] > neg[None]).float()
            + 0.5 * (pos[:, None] == neg[None]))
    assert auc == pytest.approx(float(wins.mean()))
    assert separation_auc((mask == 2).float(), mask, 2) == 1.0
    assert separation_auc((mask != 2).float(), mask, 2) == 0.0
    assert np.isnan(separation_auc(sim, mask, positive=7))


def test_query_separation_is_perfect_for_features_that_are_the_mask():
    masks = torch.zeros(3, 32, 32, dtype=torch.long)
    masks[0, 8:24, 8:24] = 1
    masks[1, :16, :] = 2
    grid_masks = F.avg_pool2d(F.one_hot(masks, 3).permute(0, 3, 1, 2).float(),
                              4)
    auc = query_separation(grid_masks, masks)
    assert auc[0] > 0.95 and auc[1] > 0.95 and np.isnan(auc[2])
    noise = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    assert np.nanmean(query_separation(noise, masks)) < 0.9


def test_cell_labels_and_retrieval_precision():
    masks = torch.zeros(4, 16, 16, dtype=torch.long)
    masks[:2, 4:12, 4:12] = 1
    masks[2:, 4:12, 4:12] = 2
    masks[3, :4, :4] = 255
    labels = cell_labels(masks, (4, 4))
    assert labels[0, 1, 1] == 1 and labels[2, 2, 2] == 2
    assert labels[0, 0, 0] == 0 and labels[3, 0, 0] == 255
    # features that are the class: the nearest pixels are of the same class
    feats = F.one_hot(labels.clamp(max=2), 3).permute(0, 3, 1, 2).float()
    g = torch.Generator().manual_seed(7)
    feats = feats + 0.01 * torch.randn(feats.shape, generator=g)
    precision = retrieval_precision(feats, masks, k=4)
    assert np.allclose(precision, 1.0)
    y, x, cls = object_pixel(masks[0], (4, 4))
    found = nearest_patches(feats, 0, y, x, k=4)
    assert all(int(labels[m.image, m.y, m.x]) == cls for m in found)


def test_dense_features_eval_mode_batch_independent_and_mode_restored():
    torch.manual_seed(0)
    enc = build_backbone("resnet18", stem="small", width=8, image_size=32)
    enc.train()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    f = dense_features(enc, images, batch_size=2)
    assert f.shape == (5, 64, 4, 4) and enc.training
    assert torch.allclose(dense_features(enc, images[3:4]), f[3:4], atol=1e-5)


def bn_stats(enc):
    return {n: (m.running_mean.clone(), m.running_var.clone())
            for n, m in enc.named_modules()
            if isinstance(m, torch.nn.BatchNorm2d)}


@pytest.mark.parametrize("training", [False, True])
def test_estimated_batchnorm_statistics_are_the_images_and_nothing_else(
        training):
    torch.manual_seed(0)
    enc = build_backbone("resnet18", stem="small", width=8, image_size=32)
    enc.train(training)
    weights = {n: p.clone() for n, p in enc.named_parameters()}
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    # at initialisation: mean 0, variance 1 everywhere
    assert all(torch.equal(m, torch.zeros_like(m))
               and torch.equal(v, torch.ones_like(v))
               for m, v in bn_stats(enc).values())
    raw = dense_features(enc, images)

    # one batch: the first BatchNorm's statistics are those of its input,
    # conv1 of the normalised images, per channel
    assert estimate_batchnorm_statistics(enc, images, batch_size=6) is enc
    with torch.no_grad():
        x = enc.conv1(normalize(images))
    stats = bn_stats(enc)
    assert torch.allclose(stats["bn1"][0], x.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(stats["bn1"][1], x.var((0, 2, 3)), rtol=1e-4)
    # every BatchNorm moved away from its initial values
    assert all(not torch.allclose(m, torch.zeros_like(m))
               and not torch.allclose(v, torch.ones_like(v))
               for m, v in stats.values())
    # no weight changed, the mode is the one before, and the features too
    assert all(torch.equal(p, weights[n]) for n, p in enc.named_parameters())
    assert all(m.training == training for m in enc.modules())
    assert not torch.allclose(dense_features(enc, images), raw, atol=1e-3)

    # batches of 4 and 2: the average of the batches' statistics, each
    # batch counting once, whatever the statistics were before
    estimate_batchnorm_statistics(enc, images, batch_size=4)
    with torch.no_grad():
        parts = [enc.conv1(normalize(b)) for b in images.split(4)]
    mean = torch.stack([p.mean((0, 2, 3)) for p in parts]).mean(0)
    var = torch.stack([p.var((0, 2, 3)) for p in parts]).mean(0)
    assert torch.allclose(enc.bn1.running_mean, mean, atol=1e-5)
    assert torch.allclose(enc.bn1.running_var, var, rtol=1e-4)
    assert all(m.momentum == 0.1 for m in enc.modules()
               if isinstance(m, torch.nn.BatchNorm2d))


def test_estimating_statistics_restores_each_modules_own_mode():
    enc = build_backbone("resnet18", stem="small", width=8, image_size=32)
    enc.train()
    enc.layer2.eval()                 # a mix, as a partly frozen encoder has
    before = {name: m.training for name, m in enc.named_modules()}
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    estimate_batchnorm_statistics(enc, images)
    assert {name: m.training for name, m in enc.named_modules()} == before


def test_random_baselines_are_seeded_builds_with_estimated_statistics():
    def build():
        return build_backbone("resnet18", stem="small", width=8,
                              image_size=32)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    encoders = random_baselines(build, images, seeds=(3, 4))
    assert list(encoders) == ["random 3", "random 4"]
    torch.manual_seed(3)
    again = estimate_batchnorm_statistics(build(), images)
    first = encoders["random 3"].state_dict()
    assert all(torch.equal(v, first[k]) for k, v in again.state_dict().items())
    # a different seed is a different network
    assert not torch.equal(encoders["random 4"].conv1.weight,
                           encoders["random 3"].conv1.weight)
    # the statistics are the images', not those at initialisation
    assert not torch.equal(first["bn1.running_mean"],
                           torch.zeros_like(first["bn1.running_mean"]))


def test_feature_measures_average_over_images_with_their_standard_error():
    masks = torch.zeros(2, 32, 32, dtype=torch.long)
    masks[:, 8:24, 8:24] = 1
    exact = F.avg_pool2d(F.one_hot(masks, 2).permute(0, 3, 1, 2).float(), 4)
    # the same image twice: every measure the same, no spread
    same = feature_measures(exact, masks, k=4)
    assert same["auc"] > 0.95 and same["hits"] == pytest.approx(1.0)
    assert same["auc_se"] == pytest.approx(0.0, abs=1e-9)
    assert same["hits_se"] == pytest.approx(0.0, abs=1e-9)
    assert same["position"] == pytest.approx(1.0)
    # the second image's features noise: the AUC is the mean of two values
    # a and b, its standard error |a - b| / 2 / sqrt(2)
    mixed = exact.clone()
    mixed[1] = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(1))
    a, b = query_separation(mixed, masks)
    got = feature_measures(mixed, masks, k=4)
    assert got["auc"] == pytest.approx((a + b) / 2)
    assert got["auc_se"] == pytest.approx(abs(a - b) / 2 / 2 ** 0.5)
    assert got["position"] < same["position"]


def test_the_figures_have_a_panel_per_image_and_encoder():
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(8)
    feats = {"a": torch.randn(3, 8, 4, 4, generator=g),
             "b": torch.randn(3, 8, 4, 4, generator=g)}
    fig = show_features(images, feats, query=(0, 1, 2))
    assert len(fig.axes) == 3 * 5 + 2                 # panels + colour bars
    fig = show_nearest_patches(images, feats, query=(0, 1, 2), k=3)
    assert len(fig.axes) == 2 * 4


def test_position_share_is_one_for_a_fixed_map_and_small_for_noise():
    g = torch.Generator().manual_seed(9)
    fixed = torch.randn(1, 6, 5, 5, generator=g).expand(8, -1, -1, -1)
    assert position_share(fixed + 0.0) == pytest.approx(1.0)
    noise = torch.randn(400, 6, 5, 5, generator=g)
    assert position_share(noise) < 0.01          # about 1/400
    half = fixed + torch.randn(8, 6, 5, 5, generator=g) * fixed.std()
    assert 0.3 < position_share(half) < 0.7
