"""benchmarks/gan_throughput.py compares like with like, and runs (tiny, on CPU)."""

import importlib.util
import json

import pytest

from conftest import REPO


def _module():
    spec = importlib.util.spec_from_file_location("gan_throughput", REPO / "benchmarks" / "gan_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("size", [32, 64])
def test_the_reference_is_the_same_architecture_as_ours(size):
    """Layer for layer, the plain reference and our per_class network with K = 1 have the same
    parameter shapes: the speed-up is engineering, not a smaller model."""
    from augment.core.gan.dcgan import Discriminator, Generator

    ref_g, ref_d = _module().reference_nets(size, nz=100, ngf=64, ndf=64, nc=3)
    ours_g, ours_d = Generator(1, 100, 64, 3, size, "per_class"), Discriminator(1, 64, 3, size, "per_class")
    assert [p.shape for p in ref_g.parameters()] == [p.shape for p in ours_g.parameters()]
    assert [p.shape for p in ref_d.parameters()] == [p.shape for p in ours_d.parameters()]


def test_the_benchmark_writes_its_json(tmp_path, monkeypatch):
    out = tmp_path / "gan.json"
    monkeypatch.setattr("sys.argv", ["gan_throughput.py", "--device", "cpu", "--sizes", "32", "--classes", "2",
                                     "--batch", "4", "--steps", "1", "--warmup", "0", "--ngf", "8", "--out", str(out)])
    _module().main()
    row = json.loads(out.read_text())["results"][0]
    assert row["size"] == 32 and row["classes"] == 2
    for name in ("reference_1", "reference_K", "ours_1", "ours_K"):
        assert row[name]["images_per_second"] > 0
