"""byol_lite: BYOL self-supervised pretraining for semantic segmentation, small and tested."""
from byol_lite.method.augment import BYOLAugment, ViewConfig, apply_geometry, paper_views
from byol_lite.method.backbones import Backbone, build_backbone, load_backbone, save_backbone
from byol_lite.method.byol import BYOL, cosine_tau, ema_update_, regression_loss
from byol_lite.method.heads import MLPHead

__version__ = "0.1.0"

__all__ = [
    "BYOL", "BYOLAugment", "Backbone", "MLPHead", "ViewConfig", "apply_geometry", "build_backbone",
    "cosine_tau", "ema_update_", "load_backbone", "paper_views", "regression_loss", "save_backbone",
]
