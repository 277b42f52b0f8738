"""Images per second of a full GAN training step: a plain reference DCGAN vs ours.

    python benchmarks/gan_throughput.py [--device cuda] [--sizes 32 64] [--classes 10] [--batch 128]
        [--steps 20] [--warmup 5] [--ngf 64] [--nz 100] [--compile] [--out FILE]

Measured side by side in one run, for each training resolution:
  reference_1     the DCGAN paper's architecture written the plain way (pytorch/examples'
                  dcgan: nn.Sequential, Sigmoid + BCELoss, fp32, Adam 2e-4/0.5): one class
  reference_K     K such GANs trained one after another (one step of each): what a user without
                  a grouped network does for K classes
  ours_1          our per_class trainer (augment.core.gan.train.train_step) with K = 1
  ours_K          our per_class trainer, all K classes in one grouped-convolution step
  ours_*_eager    (CUDA) the same with gan.cuda_graphs off: every kernel launched from Python
Both sides train the same architecture and width (ngf = ndf, nz). Ours also does what the stage
does every step: DiffAugment (translation + cutout) on real and fake, the EMA update of G, and
on CUDA bf16 autocast, channels_last, fused Adam and (gan.cuda_graphs: auto) the step replayed as one CUDA graph. Throughput = real images consumed per
second (batch x classes / step time), after --warmup untimed steps.
Targets (issue 31, on a CUDA GPU, 32 px): ours_K >= 15x reference_K; ours_1 >= 2x reference_1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the plain reference


def reference_nets(size: int, nz: int, ngf: int, ndf: int, nc: int) -> tuple[nn.Module, nn.Module]:
    """pytorch/examples' dcgan Generator/Discriminator, generalised to 32 or 64 pixels."""
    n = {32: 3, 64: 4}[size]  # up-sampling blocks after the 4x4 projection
    g: list[nn.Module] = [nn.ConvTranspose2d(nz, ngf * 2 ** (n - 1), 4, 1, 0, bias=False),
                          nn.BatchNorm2d(ngf * 2 ** (n - 1)), nn.ReLU(True)]
    for i in range(n - 1, 0, -1):
        g += [nn.ConvTranspose2d(ngf * 2 ** i, ngf * 2 ** (i - 1), 4, 2, 1, bias=False),
              nn.BatchNorm2d(ngf * 2 ** (i - 1)), nn.ReLU(True)]
    g += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
    d: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    for i in range(n - 1):
        d += [nn.Conv2d(ndf * 2 ** i, ndf * 2 ** (i + 1), 4, 2, 1, bias=False),
              nn.BatchNorm2d(ndf * 2 ** (i + 1)), nn.LeakyReLU(0.2, inplace=True)]
    d += [nn.Conv2d(ndf * 2 ** (n - 1), 1, 4, 1, 0, bias=False), nn.Sigmoid()]
    return nn.Sequential(*g), nn.Sequential(*d)


class ReferenceGAN:
    """One class's DCGAN and its training step, as in pytorch/examples' dcgan/main.py."""

    def __init__(self, size: int, nz: int, ngf: int, nc: int, batch: int, device: torch.device):
        self.netG, self.netD = (m.to(device) for m in reference_nets(size, nz, ngf, ngf, nc))
        self.criterion = nn.BCELoss()
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optD = torch.optim.Adam(self.netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.nz, self.device = nz, device
        self.real = torch.rand(batch, nc, size, size, device=device) * 2 - 1

    def step(self) -> None:
        b = self.real.shape[0]
        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
        self.netD.zero_grad()
        label = torch.full((b,), 1.0, device=self.device)
        output = self.netD(self.real).view(-1)
        errD_real = self.criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        noise = torch.randn(b, self.nz, 1, 1, device=self.device)
        fake = self.netG(noise)
        label.fill_(0.0)
        output = self.netD(fake.detach()).view(-1)
        errD_fake = self.criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        self.optD.step()
        # (2) Update G: maximize log(D(G(z)))
        self.netG.zero_grad()
        label.fill_(1.0)
        output = self.netD(fake).view(-1)
        errG = self.criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        self.optG.step()
        _ = (errD.item(), errG.item(), D_x, D_G_z1, D_G_z2)  # the example logs these every step


# --------------------------------------------------------------------------- ours


def ours(size: int, k: int, nz: int, ngf: int, nc: int, batch: int, device: torch.device, compile_: bool,
         graphs: str = "auto"):
    from augment.config import GanConfig
    from augment.core.gan.train import build_state, train_step

    cfg = GanConfig(mode="per_class", image_size=size, batch_size=batch, nz=nz, ngf=ngf, ndf=ngf,
                    diffaugment=["translation", "cutout"], cuda_graphs=graphs)
    state = build_state(cfg, k, nc, seed=0, device=device)
    if compile_:
        state.G.compile()
        state.D.compile()
    bank = torch.rand(k, 64, nc, size, size, device=device) * 2 - 1
    counts = torch.full((k,), 64, device=device)
    return lambda: train_step(state, bank, counts, cfg)


def timed(step, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], choices=[32, 64])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128, help="images per class per step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--ngf", type=int, default=64, help="G and D width (pytorch/examples: 64)")
    parser.add_argument("--nz", type=int, default=100)
    parser.add_argument("--channels", type=int, default=3, choices=[1, 3])
    parser.add_argument("--compile", action="store_true", help="torch.compile our G and D")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gan_throughput.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # as pytorch/examples' dcgan does
    k, b = args.classes, args.batch
    results = []
    for size in args.sizes:
        refs = [ReferenceGAN(size, args.nz, args.ngf, args.channels, b, device) for _ in range(k)]

        def reference_k() -> None:
            for gan in refs:
                gan.step()

        row = {"size": size, "classes": k, "batch_per_class": b}
        seconds = {
            "reference_1": timed(refs[0].step, args.steps, args.warmup, device),
            "reference_K": timed(reference_k, max(1, args.steps // 4), 1, device),
            "ours_1": timed(ours(size, 1, args.nz, args.ngf, args.channels, b, device, args.compile),
                            args.steps, args.warmup, device),
            "ours_K": timed(ours(size, k, args.nz, args.ngf, args.channels, b, device, args.compile),
                            args.steps, args.warmup, device),
        }
        if device.type == "cuda":  # the same step launched kernel by kernel (gan.cuda_graphs: off)
            seconds["ours_1_eager"] = timed(ours(size, 1, args.nz, args.ngf, args.channels, b, device, args.compile, "off"),
                                            args.steps, args.warmup, device)
            seconds["ours_K_eager"] = timed(ours(size, k, args.nz, args.ngf, args.channels, b, device, args.compile, "off"),
                                            args.steps, args.warmup, device)
        del refs
        for name, s in seconds.items():
            images = b * (k if name.endswith("_K") else 1)
            row[name] = {"step_seconds": round(s, 5), "images_per_second": round(images / s, 1)}
        row["speedup_K"] = round(seconds["reference_K"] / seconds["ours_K"], 2)
        row["speedup_1"] = round(seconds["reference_1"] / seconds["ours_1"], 2)
        results.append(row)
        print(json.dumps(row))
    out = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "settings": {k_: (str(v) if isinstance(v, Path) else v) for k_, v in vars(args).items()},
        "targets": {"speedup_K": 15.0, "speedup_1": 2.0, "size": 32, "on": "a CUDA GPU (issue 31)"},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
