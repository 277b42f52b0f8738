"""The image-conditioned generator of gan.mode "hydra": new images from the features of three real images of a class.

After HydraMix (Reinders, Schubert and Rosenhahn 2025), the successor of ChimeraMix by the same authors. The
mix generator (augment.core.gan.mix) takes each cell of a grid from one of two parents. HydraMix mixes more
than two images of a class under masks shaped like regions of an image rather than grid cells. Here,
PARENTS real images of the class are encoded, and the feature map is cut into PARENTS regions, one per
parent. The regions are the cells of a Voronoi partition of the image around one random seed point per
parent. HydraMix cuts the image with a segmentation (Felzenszwalb's); on a grey digit, a segmentation
finds the stroke and the background and not parts of the digit, so the regions here are a partition of
the plane. Each parent's mask is the share of its region in every feature cell (soft at the borders, and
the masks sum to 1). A decoder turns the mix into an image. The encoder, decoder, losses,
discriminator and training are those of the mix generator: reconstruction plus a projection
discriminator.

z keeps the mix generator's contract: its first dimensions' signs are the bits of the parents' indices
(PARENT_BITS each, distinct parents where the class has enough images) and of the seeds' positions
(SEED_BITS per coordinate); the rest is the noise. A latent scale therefore scales only the noise.
Two seeds on one place (1 sample in about 22) leave the later parent no region: the sample is a mix of
fewer parents, and the manifest still names all three (k-fold then drops it with any of them: cautious).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from augment.core.gan.mix import PARENT_BITS, Mix, MixGenerator, _bits

PARENTS = 3  # real images per mix
SEED_BITS = 3  # bits per coordinate of a region's seed: 8 x 8 places over the image
SELECT_DIMS = PARENTS * (PARENT_BITS + 2 * SEED_BITS)  # z dimensions read as bits; the rest of z is noise


class HydraGenerator(MixGenerator):
    mode, n_parents, select_dims = "hydra", PARENTS, SELECT_DIMS

    def parents(self, z: torch.Tensor) -> torch.Tensor:
        """The parents' indices within their class that z picks, (B, K, PARENTS): drawn without replacement
        (each next one ranked among the images not yet picked) while the class has images left, then
        with replacement."""
        counts = self.counts.view(1, -1)
        span = 2**PARENT_BITS
        picks: list[torch.Tensor] = []
        for j in range(self.n_parents):
            r = _bits(z[..., j * PARENT_BITS : (j + 1) * PARENT_BITS])
            left = counts - j
            v = r * left.clamp(min=1) // span  # the rank among the images not picked yet
            if picks:
                for taken in torch.sort(torch.stack(picks, -1), dim=-1).values.unbind(-1):
                    v = v + (v >= taken).long()  # skip the picked ones, smallest first
            picks.append(torch.where(left > 0, v, r * counts // span))
        return torch.stack(picks, -1)

    def seeds(self, z: torch.Tensor) -> torch.Tensor:
        """Each parent's seed point in [0, 1]^2, (B*K, PARENTS, 2): the centres of an 8 x 8 grid of places."""
        start = self.n_parents * PARENT_BITS
        bits = z[..., start : self.select_dims].reshape(-1, self.n_parents, 2, SEED_BITS)
        return (_bits(bits).float() + 0.5) / 2**SEED_BITS

    def weights(self, z: torch.Tensor, size: int) -> torch.Tensor:
        """(B*K, PARENTS, size, size): the share of each parent's Voronoi region in every feature cell,
        worked out on a grid 4x finer than the cells (so borders are soft); every cell's shares sum to 1."""
        fine = 4 * size
        axis = (torch.arange(fine, device=z.device, dtype=torch.float32) + 0.5) / fine
        grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).view(1, 1, fine * fine, 2)
        seeds = self.seeds(z).unsqueeze(2)  # (B*K, P, 1, 2), (row, column)
        nearest = ((grid - seeds) ** 2).sum(-1).argmin(1)  # (B*K, fine*fine); a tie goes to the lower parent
        owner = F.one_hot(nearest, self.n_parents).float().transpose(1, 2).reshape(-1, self.n_parents, fine, fine)
        return F.avg_pool2d(owner, 4)


class Hydra(Mix):
    """gan.mode hydra: HydraGenerator, trained as the mix generator is (gan.mix_reconstruction)."""

    generator_class = HydraGenerator
