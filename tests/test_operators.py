"""GA operators (evosgd/evolution/operators.py): exact properties and statistics with tolerances
derived from the sample size."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from scipy import stats

from evosgd.evolution import operators as ops


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These tests run many small tensor ops; on a shared 2-core machine torch's intra-op thread
    pool makes each op ~20x slower than one thread (measured), so run them single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_tournament_of_size_p_without_replacement_always_returns_the_best():
    R, P, n = 40, 17, 64
    losses = torch.rand(R, P, generator=gen(1))
    idx = ops.sel_tournament(losses, n, k=P, generator=gen(2), replace=False)
    assert idx.shape == (R, n)
    assert torch.equal(idx, losses.argmin(dim=1, keepdim=True).expand(R, n))


def test_tournament_with_replacement_wins_at_the_deap_rate():
    # DEAP semantics: k aspirants drawn with replacement; the best wins unless absent from all k:
    # P(best) = 1 - (1 - 1/P)^k.  n = R*m Bernoulli draws -> SE = sqrt(p(1-p)/n); 5 SE tolerance.
    R, P, k, m = 200, 10, 3, 200
    losses = torch.rand(R, P, generator=gen(3))
    idx = ops.sel_tournament(losses, m, k=k, generator=gen(4))
    hit = (idx == losses.argmin(dim=1, keepdim=True)).double().mean().item()
    p = 1 - (1 - 1 / P) ** k
    assert abs(hit - p) < 5 * math.sqrt(p * (1 - p) / (R * m))


def test_truncation_selects_only_the_best_fraction_evenly():
    R, P, n = 8, 20, 40
    losses = torch.randn(R, P, generator=gen(5))
    idx = ops.sel_truncation(losses, n, fraction=0.25, generator=gen(6))  # m = 5 best, 8 copies each
    best5 = losses.argsort(dim=1)[:, :5]
    for r in range(R):
        counts = torch.bincount(idx[r], minlength=P)
        assert set(torch.nonzero(counts).flatten().tolist()) == set(best5[r].tolist())
        assert (counts[best5[r]] == 8).all()


def test_roulette_frequencies_match_weights_chi_square():
    # 20,000 draws from 5 categories: Pearson chi-square with 4 dof; p > 1e-3 (fixed seed).
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    idx = ops.sel_roulette(w, 20000, gen(7))
    counts = torch.bincount(idx[0], minlength=5).numpy()
    assert counts[0] == 0  # weight 0 is never drawn
    expected = 20000 * w[0, 1:].numpy() / w.sum().item()
    assert stats.chisquare(counts[1:], expected).pvalue > 1e-3


def test_sus_counts_are_floor_or_ceil_of_expectation():
    # Baker's SUS: individual i is chosen floor(n p_i) or ceil(n p_i) times (minimal spread).
    R, P, n = 30, 12, 12
    w = torch.rand(R, P, generator=gen(8), dtype=torch.float64)
    idx = ops.sel_sus(w, n, gen(9))
    expect = n * w / w.sum(dim=1, keepdim=True)
    counts = torch.stack([torch.bincount(idx[r], minlength=P) for r in range(R)]).double()
    assert ((counts >= expect.floor() - 1e-9) & (counts <= expect.ceil() + 1e-9)).all()


def test_linear_rank_probabilities_follow_baker():
    losses = torch.tensor([[3.0, 1.0, 2.0, 0.5]])
    p = ops.linear_rank_probabilities(losses, pressure=1.8)
    assert torch.allclose(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    P = 4  # best (0.5) gets s/P, worst (3.0) gets (2-s)/P, linear in rank between
    assert p[0, 3].item() == pytest.approx(1.8 / P)
    assert p[0, 0].item() == pytest.approx(0.2 / P)
    assert p[0, 1].item() > p[0, 2].item() > p[0, 0].item()


def test_window_weights():
    w = ops.window_weights(torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0], [1.0, float("nan"), 0.0]]))
    assert torch.equal(w[0], torch.tensor([2.0, 0.0, 1.0]))
    assert torch.equal(w[1], torch.ones(3))  # flat: uniform
    assert torch.equal(w[2], torch.tensor([0.0, 0.0, 1.0]))  # NaN gets 0


def _parents(R=16, M=50, D=9, seed=10):
    g = gen(seed)
    return torch.randn(R, M, D, generator=g), torch.randn(R, M, D, generator=g) + 10.0


def test_uniform_crossover_keeps_each_gene_from_one_parent():
    p1, p2 = _parents()
    c1, c2 = ops.cx_uniform(p1, p2, gen(11), indpb=0.3)
    from_p1 = c1 == p1
    assert (from_p1 | (c1 == p2)).all()
    # the other child takes the complementary gene
    assert torch.equal(c2, torch.where(from_p1, p2, p1))
    # swap rate: n = R*M*D genes, SE = sqrt(p(1-p)/n); 5 SE tolerance
    n = from_p1.numel()
    swapped = (~from_p1).double().mean().item()
    assert abs(swapped - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n)


@pytest.mark.parametrize("cx", [ops.cx_one_point, ops.cx_two_point])
def test_point_crossovers_swap_one_contiguous_segment(cx):
    p1, p2 = _parents()
    c1, c2 = cx(p1, p2, gen(12))
    swapped = c1 == p2
    assert ((c1 == p1) | swapped).all() and torch.equal(c2, torch.where(swapped, p1, p2))
    s = swapped.to(torch.int8)
    changes = (s[..., 1:] != s[..., :-1]).sum(-1)  # a single segment has at most 2 boundaries
    assert (changes <= 2).all() and swapped.any(-1).all()
    if cx is ops.cx_one_point:
        assert swapped[..., -1].all() and not swapped[..., 0].any()  # a suffix from c in 1..D-1


def test_two_point_segment_matches_deap():
    # Same segment-length distribution as deap.tools.cxTwoPoint: 2,000 pairs each, two-sample KS.
    D, n = 7, 2000
    a = torch.zeros(1, n, D)
    b = torch.ones(1, n, D)
    c1, _ = ops.cx_two_point(a, b, gen(13))
    ours = c1.sum(-1).flatten().numpy()
    from deap import tools

    rnd = random.Random(0)
    state = random.getstate()
    random.setstate(rnd.getstate())
    theirs = []
    for _ in range(n):
        x, y = [0.0] * D, [1.0] * D
        tools.cxTwoPoint(x, y)
        theirs.append(sum(x))
    random.setstate(state)
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-3


def test_blend_crossover_is_uniform_on_the_extended_interval():
    # Parents 0 and 1, alpha = 0.5: each child gene ~ U(-0.5, 1.5).  KS test on 20,000 genes.
    p1, p2 = torch.zeros(4, 100, 50, dtype=torch.float64), torch.ones(4, 100, 50, dtype=torch.float64)
    c1, c2 = ops.cx_blend(p1, p2, gen(14), alpha=0.5)
    assert torch.allclose(c1 + c2, p1 + p2)
    assert stats.kstest(c1.flatten().numpy(), stats.uniform(loc=-0.5, scale=2.0).cdf).pvalue > 1e-3


def test_sbx_preserves_the_mean_and_spread_follows_deb():
    # Deb & Agrawal: beta = |c1 - c2| / |p1 - p2| has P(beta <= 1) = 1/2 and density
    # 0.5 (eta+1) beta^eta on [0, 1].  So beta^(eta+1) ~ U(0, 1) given beta <= 1: KS test.
    p1, p2 = torch.zeros(4, 100, 50, dtype=torch.float64), torch.ones(4, 100, 50, dtype=torch.float64)
    eta = 5.0
    c1, c2 = ops.cx_sbx(p1, p2, gen(15), eta=eta)
    assert torch.allclose(c1 + c2, p1 + p2)
    beta = (c1 - c2).abs().flatten().numpy()
    n = beta.size
    assert abs((beta <= 1).mean() - 0.5) < 5 * math.sqrt(0.25 / n)
    assert stats.kstest(beta[beta <= 1] ** (eta + 1), "uniform").pvalue > 1e-3


def test_arithmetic_and_intermediate_crossover():
    p1, p2 = _parents()
    c1, c2 = ops.cx_arithmetic(p1, p2, gen(16), weight=0.5)
    assert torch.allclose(c1, (p1 + p2) / 2) and torch.allclose(c2, c1)
    c1, c2 = ops.cx_arithmetic(p1, p2, gen(16))
    a = (c1 - p2) / (p1 - p2)  # one weight per pair, the same for every gene, in [0, 1]
    assert torch.allclose(a, a[..., :1].expand_as(a), atol=1e-4)
    assert (a >= -1e-5).all() and (a <= 1 + 1e-5).all()


def test_mate_pairs_probability_and_identity():
    p = torch.randn(8, 11, 4, generator=gen(17))  # odd M: the last one is left alone
    assert torch.equal(ops.mate_pairs(p, ops.cx_uniform, 0.0, gen(18)), p)
    out = ops.mate_pairs(p, lambda a, b, g: (b, a), 1.0, gen(18))
    assert torch.equal(out[:, 0:10:2], p[:, 1:10:2]) and torch.equal(out[:, 10], p[:, 10])
    # pair crossing rate: 8*5 = 40 pairs per draw, 50 draws = 2,000 Bernoulli(0.3); 5 SE
    crossed = []
    g = gen(19)
    for _ in range(50):
        out = ops.mate_pairs(p, lambda a, b, g_: (b, a), 0.3, g)
        crossed.append((out[:, 0:10:2] != p[:, 0:10:2]).any(-1).double().mean().item())
    assert abs(np.mean(crossed) - 0.3) < 5 * math.sqrt(0.21 / 2000)


def test_gaussian_mutation_rate_and_effect_size_match_parameters():
    # n = 10^6 genes: mutated fraction has SE sqrt(p(1-p)/n) ~ 3e-4; among the ~10^5 mutated
    # genes the step's mean has SE sigma/sqrt(m) and its std SE ~ sigma/sqrt(2m).  5 SE tolerances.
    x = torch.zeros(100, 100, 100, dtype=torch.float64)
    indpb, sigma = 0.1, 0.7
    y = ops.mut_gaussian(x, gen(20), sigma=sigma, indpb=indpb)
    hit = y != 0
    n, m = hit.numel(), int(hit.sum())
    assert abs(m / n - indpb) < 5 * math.sqrt(indpb * (1 - indpb) / n)
    steps = y[hit]
    assert abs(steps.mean().item()) < 5 * sigma / math.sqrt(m)
    assert abs(steps.std().item() - sigma) < 5 * sigma / math.sqrt(2 * m)


def test_polynomial_mutation_matches_deap_and_stays_in_bounds():
    # DEAP mutPolynomialBounded at x = 0.3 in [0, 1], eta = 20: 5,000 draws each, two-sample KS.
    n, eta = 5000, 20.0
    x = torch.full((1, n, 1), 0.3, dtype=torch.float64)
    ours = ops.mut_polynomial(x, gen(21), eta=eta, low=0.0, up=1.0, indpb=1.0).flatten().numpy()
    assert (ours >= 0).all() and (ours <= 1).all()
    from deap import tools

    state = random.getstate()
    random.seed(1)
    theirs = [tools.mutPolynomialBounded([0.3], eta=eta, low=0.0, up=1.0, indpb=1.0)[0][0] for _ in range(n)]
    random.setstate(state)
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-3
    near_bound = ops.mut_polynomial(torch.full((1, n, 1), 0.99, dtype=torch.float64), gen(22), eta=1.0, low=0.0, up=1.0, indpb=1.0)
    assert (near_bound <= 1).all() and (near_bound >= 0).all()


def test_elitism_keeps_the_best_parent_and_replaces_the_worst_offspring():
    R, P, D = 6, 10, 3
    g = gen(23)
    parents, offspring = torch.randn(R, P, D, generator=g), torch.randn(R, P, D, generator=g)
    pl, ol = torch.rand(R, P, generator=g), torch.rand(R, P, generator=g) + 0.5
    pop, los = ops.elitism(parents, pl, offspring, ol, 2)
    assert torch.allclose(los.amin(1), torch.minimum(pl.amin(1), ol.amin(1)))
    for r in range(R):
        worst2 = set(ol[r].argsort()[-2:].tolist())
        for i in range(P):
            if i in worst2:
                assert los[r, i] in pl[r].sort().values[:2]
            else:
                assert torch.equal(pop[r, i], offspring[r, i])


def test_diversity_is_rms_distance_to_centroid():
    pop = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])  # centroid (1,0), distances 1, 1
    assert ops.diversity(pop).item() == pytest.approx(1.0)
    assert ops.genetic_variance(pop).item() == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bitwise_select_and_swap_are_torch_where_bit_for_bit(dtype):
    """The branch-free selection (coin-flip masks) must give exactly torch.where's bits, NaN,
    infinities and -0.0 included, for full and broadcast masks."""
    from evosgd.evolution.operators import _swap, select

    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 40, 6, generator=g, dtype=dtype)
    b = torch.randn(3, 40, 6, generator=g, dtype=dtype)
    a[0, 0, 0], b[0, 0, 1], a[1, 1, 1], b[2, 2, 2] = math.nan, math.inf, -0.0, -math.inf
    bits = torch.int32 if dtype == torch.float32 else torch.int64
    for mask in (torch.rand(3, 40, 6, generator=g) < 0.5, torch.rand(3, 40, 1, generator=g) < 0.5):
        assert 0 < mask.float().mean() < 1
        assert torch.equal(select(mask, a, b).view(bits), torch.where(mask, a, b).view(bits))
        s1, s2 = _swap(a, b, mask.expand_as(a))
        assert torch.equal(s1.view(bits), torch.where(mask, b, a).view(bits))
        assert torch.equal(s2.view(bits), torch.where(mask, a, b).view(bits))


def test_gaussian_mutation_draws_normals_for_the_hits_only():
    """CPU path: the uniform per gene decides the hits (as before), then one normal per hit, in
    row-major order, is added there; no other gene moves."""
    x = torch.randn(3, 50, 20, generator=gen(1))
    g = gen(2)
    replay = torch.Generator()
    replay.set_state(g.get_state())
    y = ops.mut_gaussian(x, g, sigma=0.5, indpb=0.1)
    hit = torch.rand(x.shape, generator=replay) < 0.1
    assert torch.equal(y != x, hit) and 0 < int(hit.sum()) < hit.numel()
    torch.testing.assert_close(y[hit], x[hit] + 0.5 * torch.randn(int(hit.sum()), generator=replay), rtol=0, atol=0)


def test_best_and_worst_of_one_agree_with_the_stable_sort_ties_and_non_finite_included():
    """sel_best(., 1) and elitism with one elite take argmin/argmax (O(P)) instead of a stable sort:
    the same index, the first of tied values, with NaN and inf ranked last for sel_best."""
    import math

    g = torch.Generator().manual_seed(5)
    losses = torch.randint(0, 4, (64, 9), generator=g).double()  # many ties
    losses[::7, 3] = math.nan
    losses[::5, 0] = math.inf
    losses[1] = math.nan  # a whole row non-finite
    key = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))
    assert torch.equal(ops.sel_best(losses, 1), key.argsort(dim=1, stable=True)[:, :1])
    pop = torch.arange(64 * 9 * 2, dtype=torch.float64).reshape(64, 9, 2)
    parents = -pop - 1.0  # differs from every offspring
    new, new_losses = ops.elitism(parents, losses.clone(), pop, losses, 1)
    worst = key.argsort(dim=1, descending=True, stable=True)[:, 0]
    rows = torch.arange(64)
    assert torch.equal(new[rows, worst], parents[rows, ops.sel_best(losses, 1)[:, 0]])
    changed = (new != pop).any(dim=2)
    assert torch.equal(changed.sum(dim=1), torch.ones(64, dtype=torch.long))  # exactly one replaced per row
