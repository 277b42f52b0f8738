"""The image-conditioned generator of gan.mode "mix": new images from masked mixes of two real images' features.

After ChimeraMix (Reinders et al. 2022) and DAGAN (Antoniou et al. 2017): an encoder maps each of two
real images of the same class to a feature map at a quarter of the image size; a random grid mask takes
each cell of the map from one parent or the other (plus a little projected noise, DAGAN's way to vary
one pair); a decoder turns the mix into an image. Trained with reconstruction (decode(encode(x)) = x)
and the adversarial loss of a projection discriminator, the mixes must look like real images of the
class, and they are new combinations of its real images rather than draws from noise alone.

It keeps every generator's interface (augment.core.gan.kinds), so the trainer, the sampler, the gate and
the online sampler never branch on the mode: G(z: (B, K, nz)) -> (B, K, nc, S, S). The parents are real images held in the
generator (buffer `bank`, (K, Nmax, nc, S, S), and `counts`), and z picks them: its first dimensions'
signs are the bits of the two parents' indices and of the mask, the rest is the noise. Signs do not
change when z is scaled, so a latent scale (gan.latent_scales) scales only the noise. Every layer
normalises per image (instance norm), so class k's output depends only on class k's parents and z;
the weights are shared by every class (cross-class sharing, as ChimeraMix trains one network).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from augment.core.gan.adversarial import Adversarial, TrainState
from augment.core.gan.dcgan import Discriminator
from augment.core.gan.kinds import Bank, GanSpec
from augment.core.gan.layers import Conv2d, ConvTranspose2d

PARENT_BITS = 12  # index bits per parent: uniform over classes of up to 4,096 images
GRID = 4  # the mask is a GRID x GRID grid of cells over the feature map
SELECT_DIMS = 2 * PARENT_BITS + GRID * GRID  # z dimensions read as bits; the rest of z is noise


def _bits(z: torch.Tensor) -> torch.Tensor:
    """The integer whose binary digits are the signs of z's last dimension (positive: 1)."""
    weights = 2 ** torch.arange(z.shape[-1], device=z.device)
    return ((z > 0).long() * weights).sum(-1)


def _down(cin: int, cout: int) -> list[nn.Module]:
    return [Conv2d(cin, cout, 4, 2, 1), nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2, inplace=True)]


def _up(cin: int, cout: int) -> list[nn.Module]:
    return [ConvTranspose2d(cin, cout, 4, 2, 1), nn.InstanceNorm2d(cout, affine=True), nn.ReLU(True)]


class MixGenerator(nn.Module):
    """Two parents under a grid mask; a subclass changes how many parents (n_parents), which of z's
    dimensions pick them (select_dims, parents()) and the mask (weights())."""

    mode, n_parents, select_dims = "mix", 2, SELECT_DIMS

    def __init__(self, n_classes: int, nz: int, ngf: int, nc: int, image_size: int, parents: int):
        super().__init__()
        if nz <= self.select_dims:
            raise ValueError(f"gan.mode {self.mode} needs gan.nz > {self.select_dims} "
                             f"(it reads {self.select_dims} of z as parent and mask bits)")
        self.k, self.nz, self.nc = n_classes, nz, nc
        self.register_buffer("bank", torch.zeros(n_classes, max(parents, 1), nc, image_size, image_size))
        self.register_buffer("counts", torch.ones(n_classes, dtype=torch.long))
        width = 2 * ngf  # channels of the feature map that is mixed, at image_size / 4
        self.encoder = nn.Sequential(*_down(nc, ngf), *_down(ngf, width))
        self.noise = nn.Linear(nz - self.select_dims, width)  # the noise, added to every cell of the mix
        self.decoder = nn.Sequential(
            Conv2d(width, width, 3, 1, 1), nn.InstanceNorm2d(width, affine=True), nn.ReLU(True),  # blends the seams
            *_up(width, ngf), ConvTranspose2d(ngf, nc, 4, 2, 1), nn.Tanh(),
        )

    def set_bank(self, bank: torch.Tensor, counts: torch.Tensor) -> None:
        """The real images to mix: (K, Nmax, nc, S, S) in [-1, 1], class c's first counts[c] rows."""
        self.bank.copy_(bank)
        self.counts.copy_(counts)
        self._layout = None

    def _load_from_state_dict(self, *args, **kwargs):  # a loaded bank needs its layout anew
        super()._load_from_state_dict(*args, **kwargs)
        self._layout = None

    def layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(the bank rows that hold images (n,), each padded row's place among them (K*Nmax,)), worked
        out once per bank (one host round-trip), so every step's shapes are fixed."""
        cached = getattr(self, "_layout", None)
        if cached is None or cached[0].device != self.bank.device:
            n_max = self.bank.shape[1]
            held = (torch.arange(n_max, device=self.bank.device).view(1, -1) < self.counts.view(-1, 1)).flatten()
            rows = torch.nonzero(held).flatten()
            place = torch.cumsum(held.long(), 0) - 1
            self._layout = cached = (rows, place)
        return cached

    def parents(self, z: torch.Tensor) -> torch.Tensor:
        """The two parents' indices within their class that z picks, (B, K, 2); distinct when the class has two."""
        counts = self.counts.view(1, -1)
        span = 2**PARENT_BITS
        first = _bits(z[..., :PARENT_BITS]) * counts // span
        other = _bits(z[..., PARENT_BITS : 2 * PARENT_BITS]) * (counts - 1).clamp(min=1) // span
        second = torch.where(counts > 1, (first + 1 + other) % counts, first)
        return torch.stack([first, second], dim=-1)

    def mask(self, z: torch.Tensor, size: int) -> torch.Tensor:
        """(B*K, 1, size, size): 1 where the mix takes the first parent's features."""
        cells = (z[..., 2 * PARENT_BITS : SELECT_DIMS] > 0).float().reshape(-1, 1, GRID, GRID)
        return F.interpolate(cells, size=(size, size), mode="nearest")

    def weights(self, z: torch.Tensor, size: int) -> torch.Tensor:
        """(B*K, n_parents, size, size): each parent's weight in every cell of the mix, summing to 1."""
        m = self.mask(z, size)
        return torch.cat([m, 1 - m], dim=1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)) for real images (B, K, nc, S, S): what the reconstruction loss compares to x."""
        out = self.decoder(self.encoder(x.flatten(0, 1)))
        return out.view_as(x)

    def reconstruct_bank(self, idx: torch.Tensor) -> torch.Tensor:
        """reconstruct(x) for x = the bank's images idx (B, K) within their classes (augment.core.gan.mix._through)."""
        out = self._through(idx, lambda x: self.decoder(self.encoder(x)))
        return out.view(*idx.shape, *out.shape[1:])

    def _encode_bank(self, idx: torch.Tensor) -> torch.Tensor:
        """The encoder's features of the bank's images idx (B, K, ...) within their classes: (*idx.shape, C, s, s)."""
        feats = self._through(idx, self.encoder)
        return feats.view(*idx.shape, *feats.shape[1:])

    def _through(self, idx: torch.Tensor, net) -> torch.Tensor:
        """net of the bank images idx (B, K, ...) picks, one row per use: (idx.numel(), ...).

        Every layer works per image, so one pass over every bank image, gathered per use, equals one
        pass per use: the smaller of the two is run (at 10 images a class, 32 mixes of a class need 64
        parents, the bank holds 10). Both have the same shape every step (no torch.unique).
        """
        cls = torch.arange(idx.shape[1], device=idx.device).view(1, -1, *([1] * (idx.dim() - 2)))
        flat = (cls * self.bank.shape[1] + idx).flatten()
        rows, place = self.layout()
        if len(rows) < len(flat):
            return net(self.bank.flatten(0, 1).index_select(0, rows)).index_select(0, place.index_select(0, flat))
        return net(self.bank.flatten(0, 1).index_select(0, flat))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, k, _ = z.shape
        idx = self.parents(z)  # (B, K, n_parents)
        feats = self._encode_bank(idx).flatten(0, 1)  # (B*K, n_parents, C, s, s)
        w = self.weights(z, feats.shape[-1]).unsqueeze(2)  # (B*K, n_parents, 1, s, s)
        noise = self.noise(z[..., self.select_dims :].reshape(b * k, -1))[:, :, None, None]
        mixed = (w * feats).sum(1) + noise
        out = self.decoder(mixed)
        return out.view(b, k, self.nc, *out.shape[-2:])


class Mix(Adversarial):
    """gan.mode mix: MixGenerator against the conditional mode's projection discriminator; G's loss adds
    the reconstruction of real images (gan.mix_reconstruction), as ChimeraMix trains its encoder-decoder."""

    constant_buffers = ("bank", "counts")
    generator_class = MixGenerator  # or a subclass of MixGenerator (augment.core.gan.hydra)

    def spec(self, cfg, n_classes: int, channels: int, bank: Bank | None) -> GanSpec:
        parents = bank[0].shape[1] if bank is not None else 0
        return GanSpec(cfg.mode, n_classes, cfg.nz, cfg.ngf, cfg.ndf, cfg.image_size, channels, parents)

    def networks(self, spec: GanSpec) -> tuple[nn.Module, nn.Module]:
        return (self.generator_class(spec.n_classes, spec.nz, spec.ngf, spec.channels, spec.image_size, spec.parents),
                Discriminator(spec.n_classes, spec.ndf, spec.channels, spec.image_size, "conditional"))

    def prepare(self, G: MixGenerator, bank: Bank) -> None:
        G.set_bank(*bank)

    def extra_g_loss(self, state: TrainState, idx: torch.Tensor, real: torch.Tensor, cfg) -> torch.Tensor:
        return cfg.mix_reconstruction * (state.G.reconstruct_bank(idx).float() - real).abs().mean()
