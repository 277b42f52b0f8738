"""Stage judge: the quality gate's judge, trained before the GAN (it needs only real and classical images).

The benchmark's classifier, class-balanced, on the real train split plus its classical copies;
saved to gan/judge.pt. The gan stage scores its snapshots with it while it trains (gan.patience),
the synthesize stage gates every sample with it, and the benchmark's online samples pass it too.
"""

from __future__ import annotations

from pathlib import Path

from augment import rundir
from augment.config import Config
from augment.core.classify.networks import save_classifier
from augment.core.gate.gate import train_judge
from augment.runtime import resolve_device


def run(cfg: Config, run_dir: Path, progress=None, fingerprint: str = "") -> dict:
    if not cfg.gan.enabled:
        return {"trained": False}
    data = rundir.gate_data(cfg, Path(run_dir))
    judge = train_judge(cfg, data, resolve_device(cfg.device), progress)
    save_classifier(Path(run_dir) / rundir.GATE_JUDGE, judge)
    return {"trained": True, "train_images": int(len(data.x)), "steps": data.trainer["steps"]}
