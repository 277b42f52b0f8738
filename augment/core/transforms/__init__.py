"""Augmentation: albumentations (the only module that imports it) and its batched, per-sample equivalents on tensors."""
