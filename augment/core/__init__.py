"""Pure modelling code: arrays and tensors in, arrays and tensors out; no run-directory layout here.

Networks, DiffAugment, GAN training and sampling, the classifier, feature extractors,
over-sampling, the quality gate, quality metrics, statistics, input readers and splits,
albumentations (augmentation.py, the only module that imports it), figures and the report's text.
"""
