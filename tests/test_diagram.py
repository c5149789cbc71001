import itertools

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from byol_lite.method.diagram import byol_diagram
from byol_lite.pretrain import PretrainConfig, build_model

# Sizes no default has, so a hard-coded figure cannot pass.
SMALL = dict(width=8, image_size=32, proj_hidden=96, proj_dim=24,
             pred_hidden=48)


def _texts(fig):
    return [t for t in fig.findobj(Text) if t.get_text()]


def test_boxes_show_the_models_sizes():
    config = PretrainConfig(**SMALL)
    model = build_model(config)
    assert model.encoder.num_features == 64
    labels = [t.get_text() for t in _texts(byol_diagram(model))]
    projectors = [s for s in labels if s.startswith("projector")]
    predictors = [s for s in labels if s.startswith("predictor")]
    encoders = [s for s in labels if s.startswith("encoder")]
    assert len(projectors) == 2 and all("64→96→24" in s for s in projectors)
    assert predictors == ["predictor $q_\\theta$\n24→48→24"]
    assert len(encoders) == 2
    assert all("ResNet-18, width 8" in s for s in encoders)
    assert "$y$: 64" in labels and "$z$: 24" in labels


def test_stop_gradient_ema_and_both_loss_directions():
    config = PretrainConfig(**SMALL, base_tau=0.97)
    fig = byol_diagram(build_model(config), config.base_tau,
                       config.tau_schedule)
    text = "\n".join(t.get_text() for t in _texts(fig))
    assert "stop-gradient" in text and "sg" in text
    assert r"\xi \leftarrow \tau\,\xi + (1-\tau)\,\theta" in text
    assert "τ from 0.97 to 1" in text
    assert r"\ell(p_1, \mathrm{sg}(z'_2))" in text
    assert r"\ell(p_2, \mathrm{sg}(z'_1))" in text


def test_no_text_overlaps_or_leaves_the_figure():
    fig = byol_diagram(build_model(PretrainConfig(**SMALL)), 0.99)
    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer))
             for t in _texts(fig)]
    assert len(boxes) > 15
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), (a, b)
    for name, box in boxes:
        assert fig.bbox.contains(box.x0, box.y0), name
        assert fig.bbox.contains(box.x1, box.y1), name


@pytest.mark.parametrize("change", [{"predictor": False},
                                    {"predictor_side": "target"}])
def test_ablations_are_refused(change):
    with pytest.raises(ValueError, match="online predictor"):
        byol_diagram(build_model(PretrainConfig(**SMALL, **change)))
