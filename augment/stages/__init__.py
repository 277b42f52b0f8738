"""One module per stage: `run(cfg, run_dir, progress)` reads the run directory, calls the pure code
in augment.core and writes its outputs; it returns the info the stage graph records.

A stage never imports another stage and never decides whether it should run: augment.graph
declares the order, the inputs and the fingerprints, and skips a stage whose inputs are unchanged.
"""
