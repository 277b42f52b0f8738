"""Shared fixtures: environment for Prefect/albumentations, tiny images, one Prefect harness per session."""

import os
import tempfile
from pathlib import Path

# Before anything imports Prefect or albumentations.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Results and Prefect's home in a per-session temporary directory, so nothing leaks between sessions.
_PREFECT_TMP = tempfile.mkdtemp(prefix="augment-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_TMP
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(Path(_PREFECT_TMP) / "storage")
os.environ["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] = "false"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (it costs 10-20 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def write_image_folder(root: Path, classes: dict[str, int], size=(12, 10), mode="L", seed=0) -> Path:
    """root/<class>/<i>.png with `n` random images per class; returns root."""
    rng = np.random.default_rng(seed)
    for label, n in classes.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[0], size[1]) if mode == "L" else (size[0], size[1], 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / label / f"{i:03d}.png")
    return root


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry under root with its sha256 (files), size and mtime, to prove the input was not written to."""
    import hashlib

    def state(p: Path) -> tuple:
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        return digest, p.stat().st_size, p.stat().st_mtime_ns

    return {str(p.relative_to(root)): state(p) for p in sorted(root.rglob("*"))}


@pytest.fixture
def image_folder(tmp_path):
    return write_image_folder(tmp_path / "input", {"cat": 8, "dog": 7, "owl": 6})


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole pipeline once on the smoke config, without Prefect: (cfg, run_dir, stage infos)."""
    from augment.graph import load_config
    from augment.graph import run_pipeline

    run_dir = tmp_path_factory.mktemp("smoke")
    cfg = load_config(SMOKE)
    return cfg, run_dir, run_pipeline(cfg, run_dir)


def changes_only_its_own_class(G, nz: int, klass: int = 1):
    """A generator made from real images (mix, hydra): replacing class `klass`'s bank changes that
    class's samples and no other's; returns the noise and the samples after, for further checks."""
    z = torch.randn(6, G.bank.shape[0], nz)
    before = G(z)
    G.bank[klass] = torch.rand_like(G.bank[klass])
    after = G(z)
    others = [k for k in range(G.bank.shape[0]) if k != klass]
    assert not torch.allclose(before[:, klass], after[:, klass])
    assert torch.equal(before[:, others], after[:, others])
    return z, after

