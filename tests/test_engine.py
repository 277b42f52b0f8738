"""The batched training engine (augment.core.classify.engine): a round of stacked models trains each model as alone."""

import numpy as np
import pytest
import torch

from augment.config import ClassicalConfig
from augment.core.transforms.copies import transforms_for
from augment.core.classify.classifier import build_network, network_spec, predict_proba, predict_round, recipe_of, train_classifiers
from augment.core.classify.engine import CHUNK, Task, _Sampler, schedule
from augment.core.classify.side_stream import SideStream, per_batch, soften
from augment.core.classify.stacked import StackedCNN
from augment.errors import UserError

RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, (40, 12, 12, 1), dtype=np.uint8)
Y = np.arange(40) % 4
XS = RNG.integers(0, 256, (30, 12, 12, 1), dtype=np.uint8)
YS = np.arange(30) % 4
MEDIUM = transforms_for(ClassicalConfig(preset="medium"), 1)


def round_of_8() -> list[Task]:
    """Eight different classifiers: classical on the fly or not, TrivialAugmentWide, class balance,
    a side stream with soft labels, each its own seed."""
    soft = soften(np.full((30, 4), 0.25) + np.eye(4)[YS], 2.0)
    return [Task(X, Y, seed=100 + s, classical=s % 2 == 0, augment="trivialaugment" if s % 3 == 0 else None,
                 balanced=s % 4 == 1, stream=SideStream(XS, YS, share=0.25, weight=0.5, soft=soft if s == 3 else None)
                 if s % 2 else None) for s in range(8)]


@pytest.mark.parametrize("member", [0, 3, 7])
def test_a_model_trained_inside_a_round_of_8_equals_it_trained_alone(member):
    """The round's models draw their batches, augmentation and dropout from their own seeded streams
    and train as one grouped network: each ends where it would alone, to float tolerance (steps
    span more than one CHUNK of draws)."""
    tasks = round_of_8()
    kw = dict(steps=CHUNK + 4, batch_size=16, width=8, classical=MEDIUM)
    alone = train_classifiers([tasks[member]], 4, **kw)[0]
    together = train_classifiers(tasks, 4, stack=8, **kw)
    a, b = alone.state_dict(), together[member].state_dict()
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(b[key].float(), a[key].float(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(predict_proba(together[member], X), predict_proba(alone, X), atol=1e-5)
    others = [m for i, m in enumerate(together) if i != member]
    assert all(not np.allclose(predict_proba(m, X), predict_proba(alone, X)) for m in others)  # not one model 8 times


def test_stacking_round_trips_and_one_pass_predicts_each_model():
    nets = [build_network(network_spec(1, 4, width=8), torch.Generator().manual_seed(s)).eval() for s in range(3)]
    stacked = StackedCNN(nets)
    copies = stacked.unstack([build_network(network_spec(1, 4, width=8), torch.Generator().manual_seed(9)) for _ in range(3)])
    for a, b in zip(nets, copies):
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    together = predict_round(nets, X)
    for i, net in enumerate(nets):
        np.testing.assert_allclose(together[i], predict_proba(net, X), atol=1e-6)


def test_the_schedule_is_torchs_onecycle_stepped_ahead():
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=50)
    expected = []
    for _ in range(50):
        expected.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
        opt.step()
        sched.step()
    assert schedule(50, 2e-3, "onecycle") == pytest.approx(expected)
    assert schedule(10, 1e-3, "cosine")[0] == (1e-3, 0.9)


def test_batches_hold_the_side_streams_share_and_balance_classes():
    """Each batch: its real rows first, then per_batch synthetic ones; balanced draws pick a class
    uniformly (here 24 of one class, 6 of another), then an image of it."""
    y = np.array([0] * 24 + [1] * 6)
    task = Task(np.zeros((30, 4, 4, 1), np.uint8), y, 0, stream=SideStream(np.zeros((50, 4, 4, 1), np.uint8),
                                                                          np.arange(50) % 2, share=0.25), balanced=True)
    sampler = _Sampler(task, 2, 32, 0, "cpu")
    rows = sampler(torch.rand(2000, 32, 2, generator=torch.Generator().manual_seed(0)))
    n_syn = per_batch(32, 30, task.stream)
    assert n_syn == 8 and bool((rows[:, : 32 - n_syn] < 30).all()) and bool((rows[:, 32 - n_syn :] >= 30).all())
    real = rows[:, : 32 - n_syn].flatten()
    assert abs(float((torch.from_numpy(y)[real] == 1).float().mean()) - 0.5) < 0.02
    uniform = _Sampler(Task(task.x, y, 0), 2, 32, 0, "cpu")(torch.rand(2000, 32, 2, generator=torch.Generator().manual_seed(1)))
    assert abs(float((torch.from_numpy(y)[uniform.flatten()] == 1).float().mean()) - 0.2) < 0.02


def test_augmentation_runs_where_benchmark_augment_on_says():
    """device: the batched ops; cpu: albumentations and torchvision image by image; auto falls back to
    cpu for a transform with no batched op, and device refuses it with the key to change."""
    invert = [{"__class_fullname__": "InvertImg", "p": 1.0}]
    assert recipe_of(MEDIUM).ran_on == "device" and recipe_of(MEDIUM, "cpu").ran_on == "cpu"
    assert recipe_of(invert).ran_on == "cpu"
    with pytest.raises(UserError, match="benchmark.augment_on: device"):
        recipe_of(invert, "device")
    task = Task(X, Y, 0, classical=True, augment="trivialaugment")
    on = {where: predict_proba(train_classifiers([task], 4, steps=5, batch_size=8, width=4, classical=MEDIUM,
                                                 augment_on=where)[0], X) for where in ("cpu", "device")}
    assert all(np.isfinite(p).all() for p in on.values()) and not np.allclose(on["cpu"], on["device"])


def test_the_round_is_seeded_and_ignores_the_global_rng():
    tasks = round_of_8()[:3]
    kw = dict(steps=6, batch_size=8, width=4, classical=MEDIUM, stack=3)
    torch.manual_seed(1)
    a = [predict_proba(m, X) for m in train_classifiers(tasks, 4, **kw)]
    torch.manual_seed(2)
    b = [predict_proba(m, X) for m in train_classifiers(tasks, 4, **kw)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


def test_a_round_is_captured_only_where_its_step_needs_no_host():
    """benchmark.cuda_graphs captures a round whose step runs on the device alone: SmallCNNs, batched
    augmentation without a drawn kernel size, no online GAN rows."""
    from augment.core.classify.engine import _capturable

    tasks, none = round_of_8(), [False] * 8
    heavy = recipe_of(transforms_for(ClassicalConfig(preset="heavy"), 1))
    assert _capturable(tasks, True, recipe_of(MEDIUM), none)
    assert not _capturable(tasks, True, heavy, none)  # GaussianBlur
    assert not _capturable(tasks, True, recipe_of(MEDIUM, "cpu"), none)  # albumentations on the CPU
    assert not _capturable(tasks, True, recipe_of(MEDIUM), [True] + none[1:])  # benchmark.online_gan
    assert not _capturable(tasks, False, recipe_of(MEDIUM), none)  # a torchvision backbone
    assert _capturable([Task(X, Y, seed=1)], True, heavy, [False])  # no task takes the pipeline


@pytest.mark.gpu
def test_a_captured_round_trains_as_the_eager_round(monkeypatch):
    """benchmark.cuda_graphs on: the round of 8 replayed as a CUDA graph (over two CHUNKs of draws, the
    schedule's lr and beta1 on the device) predicts what the eager round predicts, in fp32."""
    import augment.core.classify.engine as engine

    made = []

    class Spy(engine.CapturedStep):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(engine, "CapturedStep", Spy)
    kw = dict(steps=2 * CHUNK + 4, batch_size=16, width=8, classical=MEDIUM, device="cuda", precision="fp32", stack=8)
    graphed = train_classifiers(round_of_8(), 4, cuda_graphs="on", **kw)
    assert len(made) == 1 and made[0].graph is not None
    eager = train_classifiers(round_of_8(), 4, cuda_graphs="off", **kw)
    assert len(made) == 1
    for a, b in zip(graphed, eager):
        np.testing.assert_allclose(predict_proba(a, X), predict_proba(b, X), atol=2e-3)


def test_a_capturable_round_asks_the_host_nothing(monkeypatch):
    """What a CUDA graph cannot hold, checked on the CPU: under sync_free (as on a GPU) the batched
    augmentation and the forward pass of a capturable round read no tensor on the host, and the batched
    ops call none of the torch functions that wait for the device to size or check a result
    (torch.linalg.inv's error check broke the first capture on an H200)."""
    import inspect

    import augment.core.classify.engine as engine
    import augment.core.transforms.batch_augment as batch_augment
    import augment.core.transforms.batch_classical as batch_classical

    reads = []
    names = ("item", "__bool__", "tolist", "__int__", "__float__", "__index__", "numpy", "cpu", "nonzero")
    plain = {n: getattr(torch.Tensor, n) for n in names}

    def watched(fn):
        def inner(*args, **kwargs):
            for n in names:
                monkeypatch.setattr(torch.Tensor, n, lambda self, *a, _n=n, **k: reads.append(_n) or plain[_n](self, *a, **k))
            try:
                return fn(*args, **kwargs)
            finally:
                for n, f in plain.items():
                    monkeypatch.setattr(torch.Tensor, n, f)
        return inner

    monkeypatch.setattr(engine, "sync_free", lambda on=True: batch_augment.sync_free(True))
    monkeypatch.setattr(engine, "_augment", watched(engine._augment))
    monkeypatch.setattr(engine, "_forward", watched(engine._forward))
    tasks = round_of_8()
    assert engine._capturable(tasks, True, recipe_of(MEDIUM), [False] * 8)
    train_classifiers(tasks, 4, steps=4, batch_size=16, width=8, classical=MEDIUM, stack=8)
    assert reads == []
    source = inspect.getsource(batch_augment) + inspect.getsource(batch_classical)
    for waits in ("linalg.inv(", "unique(", "masked_select(", ".item("):  # nonzero: the CPU's way alone (watched above)
        assert waits not in source, waits
