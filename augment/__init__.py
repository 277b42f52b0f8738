"""Expand a scarce labeled image dataset and measure, honestly, whether it helped.

Plain functions over arrays and one run directory; no Prefect import anywhere in this package
(the flows/ package wraps the stage graph as Prefect tasks). Layers, imports one way:

    augment.graph     the stage graph: order, inputs, fingerprints, skipping
    augment.stages    one module per stage: run-directory I/O and calls into augment.core
    augment.core      pure modelling code: arrays and tensors in, arrays and tensors out
    contracts         augment.config, .registry, .rundir, .summary, .atomic, .png, .runtime, .errors
"""

from augment.version import __version__
__all__ = ["run", "load_config", "run_pipeline", "load_training_data", "__version__"]  # run(config) -> Summary


def __getattr__(name: str):
    # Lazy, so `import augment.png` in a spawned worker does not import torch and the stages.
    if name in ("run", "load_config", "run_pipeline"):
        from augment import graph

        return getattr(graph, name)
    if name == "load_training_data":  # the exported recipe of a finished run (augment.recipe)
        from augment.recipe import load_training_data

        return load_training_data
    raise AttributeError(f"module 'augment' has no attribute {name!r}")
