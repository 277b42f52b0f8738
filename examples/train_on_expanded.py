"""Load a run's expanded dataset into a plain PyTorch training loop and score it on the run's test split.

    python examples/train_on_expanded.py runs/default [--epochs 30]

`expanded/` is a torchvision ImageFolder (real train images plus the recommended arm's synthetic
images); the test images are the run's untouched real test split, listed in manifest.parquet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.datasets import ImageFolder

from augment.core.classifier import SmallCNN


class ManifestSplit(Dataset):
    """The real images of one split of a run, from its rundir."""

    def __init__(self, run_dir: Path, split: str, classes: list[str], transform):
        frame = pd.read_parquet(run_dir / "manifest.parquet")
        rows = frame[(frame["split"] == split) & (frame["source"] == "real")]
        self.items = [(run_dir / p, classes.index(label)) for p, label in zip(rows["path"], rows["label"])]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        return self.transform(Image.open(path)), label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)  # a script, not library code: global seeding is fine here
    size = Image.open(next((args.run_dir / "expanded").rglob("*.png"))).size[::-1]
    channels = 1 if Image.open(next((args.run_dir / "expanded").rglob("*.png"))).mode == "L" else 3
    tf = transforms.Compose([
        transforms.Grayscale() if channels == 1 else transforms.Lambda(lambda im: im.convert("RGB")),
        transforms.Resize(size),
        transforms.ToTensor(),
        transforms.Normalize([0.5] * channels, [0.5] * channels),
    ])
    train = ImageFolder(args.run_dir / "expanded", transform=tf)
    test = ManifestSplit(args.run_dir, "test", train.classes, tf)
    model = SmallCNN(channels, len(train.classes))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(train, batch_size=64, shuffle=True)
    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(test, batch_size=256):
            correct += (model(x).argmax(1) == y).sum().item()
    print(f"{len(train)} training images ({len(train.classes)} classes); test accuracy {correct / len(test):.3f} "
          f"on {len(test)} real test images")


if __name__ == "__main__":
    main()
