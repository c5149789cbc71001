"""Segmentation on top of a pretrained encoder: the model, its evaluation, the metrics and the pictures."""
