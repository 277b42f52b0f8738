"""Modelling code in groups, each a sub-package with its own purpose; a group imports only groups before
it in this order (tests/test_architecture.py checks it):

    base        device fast paths, tensor conversions, worker pools
    data        input readers (folders, CSVs, IDX), the input's fingerprint, the survey, the splits
    transforms  albumentations (the only module that imports it) and its batched equivalents
    gan         generators as plug-ins, their training loop, ensembles and sampling
    classify    the downstream classifier, the batched engine, the synthetic side stream
    gate        judging generated samples: the quality gate and its metrics, gated samples on the fly
    smote       imbalanced-learn's samplers on feature rows, and the feature spaces
    bench       where choices are made (val or k-fold), the job list, statistics
    report      the report's text, figures and HTML
"""

GROUPS = ("base", "data", "transforms", "gan", "classify", "gate", "smote", "bench", "report")
