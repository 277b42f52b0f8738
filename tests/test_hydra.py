"""gan.mode hydra: the mix generator's encoder-decoder over three real parents and Voronoi regions (augment.core.gan.hydra)."""

import numpy as np
import pytest
import torch

from augment.config import Config, GanConfig
from augment.core.gan.hydra import PARENTS, SEED_BITS, SELECT_DIMS, HydraGenerator
from augment.core.gan.kinds import GanSpec, kind
from augment.core.gan.mix import PARENT_BITS
from augment.core.gan.sampling import EnsembleGenerator, sample_parents
from augment.registry import GENERATORS
from test_mix import mix_generator

NZ = SELECT_DIMS + 8


def hydra_generator(counts=(4, 4, 4)) -> HydraGenerator:
    return mix_generator(counts, mode="hydra", nz=NZ)


@pytest.mark.parametrize("size", [16, 32])
def test_shapes_and_the_registry(size):
    G, D = kind("hydra").networks(GanSpec("hydra", 3, NZ, 4, 4, size, 3, 5))
    x = G(torch.randn(2, 3, NZ))
    assert x.shape == (2, 3, 3, size, size) and x.abs().max() <= 1.0 and D(x).shape == (2, 3)
    assert GENERATORS["hydra"].min_nz == SELECT_DIMS + 1
    with pytest.raises(ValueError, match="gan.mode hydra needs gan.nz >= 55"):
        GanConfig(mode="hydra", nz=54)
    GanConfig(mode="per_class+hydra")  # the default nz (64) is enough


def test_parents_are_in_range_distinct_where_they_can_be_and_unchanged_by_the_latent_scale():
    G = hydra_generator(counts=(1, 2, 7))
    z = torch.randn(2000, 3, NZ)
    idx = G.parents(z)
    assert idx.shape == (2000, 3, PARENTS)
    assert (idx[:, 0] == 0).all()  # one image: it is every parent
    two = idx[:, 1]
    assert two.min() >= 0 and two.max() < 2 and (two[:, 0] != two[:, 1]).all()  # both images, then one again
    seven = idx[:, 2]
    assert seven.min() >= 0 and seven.max() < 7
    assert all(len(set(row)) == PARENTS for row in seven.tolist())  # three distinct parents
    for j in range(PARENTS):  # every image gets to be every parent, about equally often
        counts = np.bincount(seven[:, j].numpy(), minlength=7)
        assert counts.min() > 2000 / 7 * 0.75
    assert torch.equal(idx, G.parents(z * 0.5))
    assert torch.equal(G.weights(z, 4), G.weights(z * 2.0, 4))


def test_the_regions_are_a_soft_partition_around_the_seeds():
    G = hydra_generator()
    z = torch.randn(64, 3, NZ)
    w = G.weights(z, 8)
    assert w.shape == (64 * 3, PARENTS, 8, 8) and (w >= 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(64 * 3, 8, 8))
    seeds = G.seeds(z)  # (B*K, P, 2) in (0, 1)
    assert ((seeds > 0) & (seeds < 1)).all()
    assert len(torch.unique(seeds.flatten(0, 1), dim=0)) == 4**SEED_BITS  # 8 x 8 places, all reached
    cell = (seeds * 8).long().clamp(max=7)  # the feature cell each seed lies in belongs mostly to its parent
    rows = torch.arange(len(w)).view(-1, 1)
    own = w[rows, torch.arange(PARENTS).view(1, -1), cell[..., 0], cell[..., 1]]
    distinct = (seeds.unsqueeze(1) - seeds.unsqueeze(2)).abs().sum(-1).add(torch.eye(PARENTS)).min(-1).values.min(-1).values > 0.3
    assert (own[distinct] >= 0.5).all()


def test_one_region_gives_that_parents_reconstruction():
    """All seeds at one place: the tie goes to the first parent, whose region is the whole image; with the
    noise weights zeroed the mix is the first parent's reconstruction."""
    G = hydra_generator()
    torch.nn.init.zeros_(G.noise.weight)
    torch.nn.init.zeros_(G.noise.bias)
    z = torch.randn(2, 3, NZ)
    z[..., PARENTS * PARENT_BITS : SELECT_DIMS] = 1.0
    w = G.weights(z, 4)
    assert torch.equal(w[:, 0], torch.ones_like(w[:, 0]))
    first = G.bank[torch.arange(3), G.parents(z)[..., 0]]
    torch.testing.assert_close(G(z), G.reconstruct(first))


def test_class_k_output_depends_only_on_class_k_parents():
    from conftest import changes_only_its_own_class

    changes_only_its_own_class(hydra_generator(), NZ)


def test_manifest_parents_of_an_ensemble_with_two_and_three_parent_members():
    """An ensemble of mix (two parents) and hydra (three) records each row's own parents; the sampler
    pads the two-parent rows with -1."""
    from augment.core.gan.mix import SELECT_DIMS as MIX_DIMS

    hydra = hydra_generator()
    mix = kind("mix").networks(GanSpec("mix", 3, NZ, 4, 4, 16, 1, 4))[0].eval()
    mix.set_bank(hydra.bank.clone(), hydra.counts.clone())
    assert NZ > MIX_DIMS
    both = EnsembleGenerator([mix, hydra])
    parents = sample_parents(both, 10, NZ, 3, seed=1, device="cpu")
    assert parents.shape == (10, 3, PARENTS)
    assert (parents[0::2, :, 2] == -1).all() and (parents[0::2, :, :2] >= 0).all()  # mix's rows
    assert (parents[1::2] >= 0).all()  # hydra's rows


class _Constant(torch.nn.Module):
    """A member that draws images filled with its own index."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, z):
        return torch.full((*z.shape[:2], 1, 2, 2), self.value)


def test_every_row_of_a_three_member_ensemble_comes_from_the_member_the_manifest_names():
    """Row b of the whole draw (not only of its batch of 256) is member b mod M, as member_of_rows says;
    with three members and 400 rows per class a batch of 256 is not a whole number of rounds."""
    from augment.core.gan.sampling import member_of_rows, sample

    G = EnsembleGenerator([_Constant(0.0), _Constant(1.0), _Constant(2.0)])
    drawn = sample(G, 400, 4, 2, seed=0, device="cpu")[:, :, 0, 0, 0]  # (400, K)
    assert np.array_equal(drawn[:, 0].numpy(), member_of_rows(400, 3)) and torch.equal(drawn[:, 0], drawn[:, 1])
    with pytest.raises(ValueError, match="gan.mode 'mix' is one generator"):  # gan:mix would be gan again
        Config(gan={"mode": "mix"}, benchmark={"cross_sources": ["gan", "gan:mix"]})
