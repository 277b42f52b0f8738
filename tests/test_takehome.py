"""What the user takes home: the deliverable is built from train and val, and the recipe export
trains as the benchmark did (the synthetic share per batch, on-the-fly augmentation, the budget)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import augment
from augment import rundir
from augment.registry import generator_modes as member_modes
from augment.rundir import RECIPE, REFIT_ROWS
from augment.core.classify.side_stream import BatchSampler


def test_the_batch_sampler_puts_the_share_in_every_batch_from_its_seed():
    y_real, y_synthetic = np.arange(30) % 3, np.arange(300) % 3
    draws = [list(BatchSampler(y_real, y_synthetic, 3, 32, 0.25, torch.Generator().manual_seed(s), steps=5)) for s in (1, 1, 2)]
    assert draws[0] == draws[1] and draws[0] != draws[2] and len(draws[0]) == 5
    for batch in draws[0]:
        assert len(batch) == 32 and sum(i >= 30 for i in batch) == 8 and all(0 <= i < 330 for i in batch)


def test_the_recipe_export_is_built_from_train_and_val_and_yields_the_share(smoke_run, tmp_path):
    cfg, source, _ = smoke_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    recipe = json.loads((run_dir / RECIPE).read_text())
    frame = rundir.read_manifest(run_dir)
    real = frame[(frame["source"] == "real") & frame["kept"]]
    assert recipe["real_splits"] == ["train", "val"]  # expand.refit: trainval, the default
    data = augment.load_training_data(run_dir, seed=3)
    n_real = int(real["split"].isin(["train", "val"]).sum())
    synthetic = len(data.dataset) - n_real
    refit = pd.read_parquet(run_dir / REFIT_ROWS)  # copies of the val images, for an arm of classical copies
    kept_train = frame[(frame["split"] == "train") & frame["kept"] & frame["source"].isin(recipe["sources"])]
    assert synthetic == int((kept_train["source"] != "real").sum()) + int(refit["kept"].sum())
    only_train = augment.load_training_data(run_dir, seed=3, splits=("train",))
    assert len(only_train.dataset) == len(data.dataset) - int((real["split"] == "val").sum()) - len(refit)

    # as if the recommended arm were real+gan at a quarter of every batch
    recipe.update(arm="real+gan", sources=["real", "gan"], share=0.25, augment="trivialaugment")
    (run_dir / RECIPE).write_text(json.dumps(recipe))
    data = augment.load_training_data(run_dir, seed=0, splits=("train",))
    n_train = int((real["split"] == "train").sum())
    batches = list(data.batch_sampler)
    bs = min(recipe["trainer"]["batch_size"], len(data.dataset))
    assert len(batches) == data.steps == recipe["benchmark_steps"]  # the benchmark's budget on the train split
    n_gan = len(data.dataset) - n_train
    expected = round(min(0.25, n_gan / (n_gan + n_train)) * bs)  # never more than concatenation gives
    assert expected > 0 and all(sum(i >= n_train for i in b) == expected for b in batches)
    fresh = augment.load_training_data(run_dir, seed=0, splits=("train",))
    images, targets, weights = next(iter(fresh.loader()))
    assert images.dtype == torch.uint8 and images.shape[0] == bs and torch.allclose(targets.sum(1), torch.ones(bs))
    assert not torch.equal(images, data.dataset.tensors[0][batches[0]])  # the same rows, after TrivialAugmentWide
    again = augment.load_training_data(run_dir, seed=0, splits=("train",))
    assert torch.equal(next(iter(again.loader()))[0], images)  # seeded


def test_a_plain_loop_over_the_export_trains_a_working_classifier(smoke_run):
    import torch.nn.functional as F

    from augment.core.classify.classifier import predict_proba

    _, run_dir, _ = smoke_run
    data = augment.load_training_data(run_dir, seed=0, splits=("train",))
    model = data.model(seed=0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=data.recipe["trainer"]["lr"])
    for images, targets, weights in data.loader():
        loss = (F.cross_entropy(model(images.float() / 127.5 - 1), targets, reduction="none") * weights).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y, _ = rundir.load_split(run_dir, "test")
    assert (predict_proba(model.eval(), x).argmax(1) == y).mean() > 0.3  # 10 classes: chance is 0.1


def test_the_refit_adds_classical_copies_of_the_val_images_as_the_classical_stage_would(smoke_run, tmp_path):
    """For an arm of classical copies, the deliverable holds copies of the val images too: as many
    per class as the classical stage makes per train image, seeded per parent, in expanded/."""
    from augment.graph import load_config, run_stage
    from augment.summary import read_summary, write_summary
    from conftest import SMOKE

    _, source, _ = smoke_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    summary = read_summary(run_dir)
    summary.recommendation.arm = "real+classical"  # as if it had won
    write_summary(run_dir, summary)
    cfg = load_config(SMOKE)
    rundir.clear_stage_record(run_dir, "expand")
    info = run_stage("expand", cfg, run_dir)
    frame = rundir.read_manifest(run_dir)
    val = frame[(frame["split"] == "val") & (frame["source"] == "real") & frame["kept"]]
    train = frame[(frame["split"] == "train") & (frame["source"] == "real")]
    per_parent = ((frame["source"] == "classical").sum()) / len(train)  # classical.multiplier
    refit = pd.read_parquet(run_dir / REFIT_ROWS)
    assert info["refit_copies"] == len(refit) == per_parent * len(val) > 0
    assert set(refit["parent_id"]) == set(val["id"]) and set(refit["split"]) == {"val"}
    files = {p.stem for p in (run_dir / "expanded").rglob("*.png")}
    assert set(refit["id"]) <= files and set(val["id"]) <= files
    data = augment.load_training_data(run_dir)
    assert len(data.dataset) == len(files)  # what the export trains on is what expanded/ holds


@pytest.mark.parametrize("train_on,mode", [("real", "per_class"), ("real+classical", "per_class"), ("real", "per_class+mix")])
def test_the_generator_refit_trains_on_train_and_val_and_its_samples_replace_the_benchmarks(smoke_run, tmp_path, monkeypatch,
                                                                                          train_on, mode):
    """expand.refit_generator: when the winning arm uses GAN samples, the generator trains again on
    every real train and val image (with gan.train_on real+classical, and on their classical copies;
    an ensemble, every member); expanded/ and the export carry its gated samples instead."""
    from augment.core.gan import train as gan_train
    from augment.graph import load_config, run_stage
    from augment.summary import SUMMARY
    from conftest import SMOKE

    _, source, _ = smoke_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    summary = json.loads((run_dir / SUMMARY).read_text())
    summary["recommendation"]["arm"] = "real+gan"  # as if the GAN arm had won
    (run_dir / SUMMARY).write_text(json.dumps(summary))
    seen = []
    real_start = gan_train.start_member
    monkeypatch.setattr(gan_train, "start_member", lambda x, y, *a, **kw: seen.append(len(y)) or real_start(x, y, *a, **kw))
    info = run_stage("expand", load_config(SMOKE, ["expand.refit_generator=true", f"gan.train_on={train_on}",
                                                   f"gan.mode={mode}", "gan.nz=48"]), run_dir)
    frame = rundir.read_manifest(run_dir)
    real = frame[(frame["source"] == "real") & frame["kept"] & frame["split"].isin(["train", "val"])]
    per_parent = (frame["source"] == "classical").sum() / (real["split"] == "train").sum()  # classical.multiplier
    copies = per_parent * len(real) if train_on == "real+classical" else 0  # of train (the stage's) and val (the refit's)
    members = member_modes(mode)
    assert seen == [len(real) + copies] * len(members) and info["generator_refit"] and info["refit_gan_kept"] > 0
    refit = pd.read_parquet(run_dir / REFIT_ROWS)
    kept = refit[(refit["source"] == "gan") & refit["kept"]]
    names = {f"{mode}:refit"} if len(members) == 1 else {f"{m}:refit" for m in members}
    assert len(kept) == info["refit_gan_kept"] and set(kept["generator"]) == names
    delivered = {p.stem for p in (run_dir / "expanded").rglob("*.png")}
    assert set(kept["id"]) <= delivered and not delivered & set(frame.loc[frame["source"] == "gan", "id"])
    assert "trained again" in (run_dir / "expanded" / "README.md").read_text()
    data = augment.load_training_data(run_dir)
    assert len(data.dataset) == len(real) + len(kept)
    benchmark_gan = frame[(frame["source"] == "gan") & frame["kept"]]
    only_train = augment.load_training_data(run_dir, splits=("train",))  # what the benchmark trained on
    assert len(only_train.dataset) == int((real["split"] == "train").sum()) + len(benchmark_gan)


def test_the_export_carries_soft_labels_and_online_generator_samples(smoke_run, tmp_path):
    """benchmark.soft_labels and benchmark.online_gan travel in recipe/: a teacher on the deliverable's
    real images gives the synthetic rows distributions, and every batch's GAN rows are fresh
    samples of the saved generator, seeded."""
    from augment.rundir import TEACHER
    from augment.graph import load_config, run_stage
    from augment.summary import SUMMARY
    from conftest import SMOKE

    _, source, _ = smoke_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    summary = json.loads((run_dir / SUMMARY).read_text())
    summary["recommendation"]["arm"] = "real+gan"
    summary["side_stream"]["real+gan"]["share"] = 0.5
    (run_dir / SUMMARY).write_text(json.dumps(summary))
    run_stage("expand", load_config(SMOKE, ["benchmark.soft_labels=true", "benchmark.online_gan=true"]), run_dir)
    recipe = json.loads((run_dir / RECIPE).read_text())
    assert recipe["online_gan"] and recipe["teacher"] == TEACHER.as_posix() and (run_dir / TEACHER).is_file()
    assert "fresh generator samples" in (run_dir / "expanded" / "README.md").read_text()
    data = augment.load_training_data(run_dir, seed=5)
    images, dist, weights, labels, fresh = data.dataset.tensors
    assert fresh.any() and (~fresh).any() and torch.allclose(dist.sum(1), torch.ones(len(dist)))
    n_gan = int(((rundir.read_manifest(run_dir)["source"] == "gan") & rundir.read_manifest(run_dir)["kept"]).sum())
    assert not fresh[:-n_gan].any() and fresh[-n_gan:].all()  # the GAN rows, never the real ones
    assert (dist[fresh].max(1).values < 1).all()  # the teacher's softened targets, not one-hot
    batch_images, batch_dist, _ = next(iter(data.loader()))
    again = augment.load_training_data(run_dir, seed=5)
    assert torch.equal(next(iter(again.loader()))[0], batch_images)  # seeded
    first = list(augment.load_training_data(run_dir, seed=5).batch_sampler)[0]
    drawn = torch.tensor(first)
    online = fresh[drawn]
    assert online.any() and not torch.equal(batch_images[online], images[drawn][online])  # new samples, not the pool
    assert torch.allclose(batch_dist.sum(1), torch.ones(len(batch_dist)))


def test_the_classical_pipeline_is_saved_as_a_file_albumentations_loads(smoke_run, tmp_path):
    """An arm trained with the classical pipeline on the fly leaves recipe/classical.json (A.save):
    A.load gives back exactly the pipeline the recipe's transforms build."""
    import albumentations as A

    from augment.core.transforms.augmentation import build_pipeline
    from augment.rundir import CLASSICAL_PIPELINE
    from augment.graph import load_config, run_stage
    from augment.summary import SUMMARY
    from conftest import SMOKE

    _, source, _ = smoke_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    summary = json.loads((run_dir / SUMMARY).read_text())
    summary["recommendation"]["arm"] = "real+classical"
    (run_dir / SUMMARY).write_text(json.dumps(summary))
    run_stage("expand", load_config(SMOKE, ["benchmark.classical_on_the_fly=true"]), run_dir)
    recipe = json.loads((run_dir / RECIPE).read_text())
    assert recipe["classical_pipeline"] == CLASSICAL_PIPELINE.as_posix()
    loaded = A.load(str(run_dir / CLASSICAL_PIPELINE), data_format="json")
    assert A.to_dict(loaded) == A.to_dict(build_pipeline(recipe["classical_transforms"]))
    run_stage("expand", load_config(SMOKE, ["benchmark.classical_on_the_fly=false"]), run_dir)
    assert not (run_dir / CLASSICAL_PIPELINE).exists()  # the copies were measured: no pipeline to hand over
