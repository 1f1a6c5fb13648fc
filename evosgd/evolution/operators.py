"""Selection, crossover and mutation operators of genetic algorithms, vectorized with torch.

Every operator works on a batch of R independent populations at once: a population is a tensor
``[R, P, D]`` (replicates, individuals, genes), its losses are ``[R, P]``, and randomness comes
only from the ``torch.Generator`` passed in.  No Python loop runs over individuals or replicates.

Names and semantics follow DEAP (Fortin et al. 2012, *DEAP: Evolutionary Algorithms Made Easy*,
JMLR 13), the reference implementation the ``ga_deap`` backend runs, so that a practitioner
reads ``sel_tournament`` as ``tools.selTournament``, ``cx_blend`` as ``tools.cxBlend`` and
``mut_gaussian`` as ``tools.mutGaussian``.  Differences from DEAP are stated where they exist.

Conventions
-----------
* Losses are **minimised**.  Fitness-proportional selections (roulette, SUS) take non-negative
  *weights* (higher = fitter); :func:`window_weights` turns losses into such weights.
* A selection returns indices ``[R, n]`` into the population; :func:`gather` picks the rows.
* A crossover takes two parent tensors ``[R, M, D]`` and returns two children of the same shape.
  :func:`mate_pairs` applies one to adjacent pairs (0, 1), (2, 3), ... of an offspring tensor with
  a per-pair probability, as DEAP's ``algorithms.varAnd`` does.
* A mutation takes ``[R, M, D]`` and returns a mutated copy.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch

from evosgd.core.device import host_side

# ----------------------------------------------------------------------------- helpers


def gather(population: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``population`` ``[R, P, *F]`` picked by ``index`` ``[R, n]`` -> ``[R, n, *F]``."""
    idx = index.reshape(index.shape + (1,) * (population.dim() - 2)).expand(index.shape + population.shape[2:])
    return torch.gather(population, 1, idx)


def _rand(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def random_permutation(R: int, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``[R, n]``: an independent uniformly random permutation of ``0..n-1`` per replicate
    (argsort of i.i.d. uniform keys)."""
    keys = torch.rand(R, n, generator=generator, device=device, dtype=torch.float64)
    return keys.argsort(dim=1)


def shuffle(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``index`` ``[R, n]`` with each row randomly permuted (so that adjacent pairs are random)."""
    perm = random_permutation(index.shape[0], index.shape[1], generator, index.device)
    return torch.gather(index, 1, perm)


def window_weights(losses: torch.Tensor) -> torch.Tensor:
    """Fitness-proportional weights from losses by *windowing* (Goldberg 1989, *Genetic
    Algorithms in Search, Optimization and Machine Learning*, ch. 3; Grefenstette 1986):

        w_i = max_j L_j - L_i   (>= 0; the worst individual gets weight 0).

    When every loss is equal the weights are uniform.  Non-finite losses get weight 0."""
    finite = torch.isfinite(losses)
    worst = torch.where(finite, losses, torch.full_like(losses, -math.inf)).amax(dim=1, keepdim=True)
    w = torch.where(finite, worst - losses, torch.zeros_like(losses))
    flat = w.sum(dim=1, keepdim=True) <= 0
    return torch.where(flat, finite.to(losses.dtype), w)


# ----------------------------------------------------------------------------- selection


def sel_best(losses: torch.Tensor, n: int) -> torch.Tensor:
    """Indices ``[R, n]`` of the n lowest losses, best first (DEAP ``tools.selBest``).
    Non-finite losses rank last."""
    key = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))
    if n == 1:  # the best (elitism 1, recommend()): argmin returns the first minimum, as the stable sort does, in O(P)
        return key.argmin(dim=1, keepdim=True)
    return key.argsort(dim=1, stable=True)[:, :n]


def sel_tournament(losses: torch.Tensor, n: int, k: int, generator: torch.Generator, replace: bool = True) -> torch.Tensor:
    """Tournament selection (Goldberg & Deb 1991; DEAP ``tools.selTournament``): each of the n
    winners is the lowest-loss of k aspirants drawn uniformly from the population.

    ``replace=True`` (DEAP's semantics) draws the aspirants with replacement, so one tournament
    may hold the same individual twice; ``replace=False`` draws k distinct aspirants, so a
    tournament of size P always returns the best individual."""
    R, P = losses.shape
    if k < 1 or (not replace and k > P):
        raise ValueError(f"tournament size k={k} must be >= 1 (and <= P={P} without replacement)")
    if replace:
        aspirants = torch.randint(0, P, (R, n, k), generator=generator, device=losses.device)
    else:  # k smallest of i.i.d. uniform keys = a uniform k-subset
        keys = torch.rand(R, n, P, generator=generator, device=losses.device, dtype=torch.float64)
        aspirants = keys.topk(k, dim=2, largest=False).indices
    key = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))
    cand = torch.gather(key.unsqueeze(1).expand(R, n, P), 2, aspirants)  # [R, n, k]
    return torch.gather(aspirants, 2, cand.argmin(dim=2, keepdim=True)).squeeze(2)


def sel_truncation(losses: torch.Tensor, n: int, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Truncation selection (Mühlenbein & Schlierkamp-Voosen 1993, *Predictive models for the
    breeder genetic algorithm*, Evol. Comput. 1(1)): the best ``m = ceil(fraction * P)``
    individuals are each chosen ``n/m`` times (cyclically, so as evenly as possible); the chosen
    list is then shuffled so that crossover pairs are random."""
    P = losses.shape[1]
    m = max(1, min(P, math.ceil(fraction * P)))
    best = sel_best(losses, m)
    chosen = best[:, torch.arange(n, device=losses.device) % m]
    return shuffle(chosen, generator)


def sel_roulette(weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Fitness-proportional ("roulette wheel") selection (Holland 1975; DEAP ``tools.selRoulette``):
    n independent draws with ``P(i) = w_i / sum_j w_j``: independent
    categorical draws (``torch.multinomial`` with replacement), so an individual of weight 0 is
    never drawn.  A row whose weights are all zero is sampled uniformly."""
    w = weights.to(torch.float64)
    w = torch.where(w.sum(dim=1, keepdim=True) > 0, w, torch.ones_like(w))
    return torch.multinomial(w, n, replacement=True, generator=generator)


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Indices ``[R, n]`` of the points ``u * total`` (u in [0, 1)) on the cumulative weights."""
    cum = weights.to(torch.float64).cumsum(dim=1)
    x = u * cum[:, -1:]
    idx = torch.searchsorted(cum, x.contiguous(), right=True)
    return idx.clamp_(max=weights.shape[1] - 1)


def sel_sus(weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Stochastic universal sampling (Baker 1987, *Reducing bias and inefficiency in the
    selection algorithm*; DEAP ``tools.selStochasticUniversalSampling``): one uniform start
    ``u ~ U(0, 1/n)`` and n equally spaced pointers ``u + i/n`` on the normalised cumulative
    weights, so individual i is chosen ``floor(n p_i)`` or ``ceil(n p_i)`` times (minimal spread).
    Unlike DEAP, whose list comes out sorted best-first, the chosen list is shuffled so that
    crossover pairs are random (the ``ga_deap`` backend shuffles too)."""
    R = weights.shape[0]
    start = torch.rand(R, 1, generator=generator, device=weights.device, dtype=torch.float64) / n
    u = start + torch.arange(n, device=weights.device, dtype=torch.float64) / n
    return shuffle(_inverse_cdf(weights, u), generator)


def linear_rank_probabilities(losses: torch.Tensor, pressure: float = 1.5) -> torch.Tensor:
    """Selection probabilities ``[R, P]`` of linear ranking (Baker 1985, *Adaptive selection
    methods for genetic algorithms*; Whitley 1989):

        p(rank r) = (2 - s) / P + 2 r (s - 1) / (P (P - 1)),   r = 0 (worst) .. P-1 (best),

    with selective pressure ``s in [1, 2]`` = expected copies of the best individual
    (s = 1: uniform; s = 2: the worst gets none).  Ties are broken by position."""
    R, P = losses.shape
    if P == 1:
        return torch.ones_like(losses, dtype=torch.float64)
    order = sel_best(losses, P)  # best first
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(P - 1, -1, -1, device=losses.device).expand(R, P))
    r = rank.to(torch.float64)
    return (2.0 - pressure) / P + 2.0 * r * (pressure - 1.0) / (P * (P - 1))


def sel_linear_rank(losses: torch.Tensor, n: int, pressure: float, generator: torch.Generator) -> torch.Tensor:
    """Linear-rank selection: n independent draws from :func:`linear_rank_probabilities`."""
    return sel_roulette(linear_rank_probabilities(losses, pressure), n, generator)


# ----------------------------------------------------------------------------- crossover

Crossover = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


#: integer type of the same width, for bitwise selection
_BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def _bitwise(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device.type == "cpu" and a.dtype == b.dtype and a.dtype in _BITS and a.shape == b.shape


def select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.where(mask, a, b)``, bit for bit, fast for a mask that is a coin flip per element.

    On the CPU ``torch.where`` takes a branch per element, so a random mask costs a branch
    misprediction per element: measured 3.7 ns per element for a 50% mask against 0.5 for a 1%
    one.  Here the choice is arithmetic on the integer views, ``b ^ ((a ^ b) & -mask)`` (all ones
    where the mask holds): the bits of ``a`` or of ``b``, exactly, at about 0.75 ns per element.
    Elsewhere (GPU, other dtypes, broadcast operands) it is ``torch.where``."""
    if not _bitwise(a, b):
        return torch.where(mask, a, b)
    it = _BITS[a.dtype]
    ai, bi = a.view(it), b.view(it)
    return (bi ^ ((ai ^ bi) & mask.to(it).neg_())).view(a.dtype)


def _swap(p1: torch.Tensor, p2: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(where(mask, p2, p1), where(mask, p1, p2))``; see :func:`select` for the bitwise form."""
    if not _bitwise(p1, p2):
        return torch.where(mask, p2, p1), torch.where(mask, p1, p2)
    it = _BITS[p1.dtype]
    i1, i2 = p1.view(it), p2.view(it)
    diff = (i1 ^ i2) & mask.to(it).neg_()
    return (i1 ^ diff).view(p1.dtype), (i2 ^ diff).view(p1.dtype)


def cx_uniform(p1: torch.Tensor, p2: torch.Tensor, generator: torch.Generator, indpb: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform crossover (Syswerda 1989; DEAP ``tools.cxUniform``): each gene is swapped between
    the two parents independently with probability ``indpb``."""
    return _swap(p1, p2, _rand(p1.shape, p1, generator) < indpb)


def cx_one_point(p1: torch.Tensor, p2: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One-point crossover (Holland 1975; DEAP ``tools.cxOnePoint``): a cut point
    ``c ~ U{1, ..., D-1}`` per pair; the genes from c on are swapped.  No-op when D < 2."""
    D = p1.shape[-1]
    if D < 2:
        return p1.clone(), p2.clone()
    cut = torch.randint(1, D, p1.shape[:-1] + (1,), generator=generator, device=p1.device)
    return _swap(p1, p2, torch.arange(D, device=p1.device) >= cut)


def cx_two_point(p1: torch.Tensor, p2: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-point crossover (De Jong 1975; DEAP ``tools.cxTwoPoint``): ``a ~ U{1..D}``,
    ``b ~ U{1..D-1}``, ``b += 1`` if ``b >= a`` else swap, then genes ``a <= j < b`` are swapped
    (DEAP's draw, so both backends have the same segment distribution).  No-op when D < 2."""
    D = p1.shape[-1]
    if D < 2:
        return p1.clone(), p2.clone()
    shape = p1.shape[:-1] + (1,)
    a = torch.randint(1, D + 1, shape, generator=generator, device=p1.device)
    b = torch.randint(1, D, shape, generator=generator, device=p1.device)
    b = torch.where(b >= a, b + 1, b)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    j = torch.arange(D, device=p1.device)
    return _swap(p1, p2, (j >= lo) & (j < hi))


def cx_blend(p1: torch.Tensor, p2: torch.Tensor, generator: torch.Generator, alpha: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend crossover BLX-alpha (Eshelman & Schaffer 1993, *Real-coded genetic algorithms and
    interval-schemata*; DEAP ``tools.cxBlend``): per gene ``gamma = (1 + 2 alpha) u - alpha``,
    ``u ~ U(0, 1)``, and

        c1 = (1 - gamma) x1 + gamma x2,     c2 = gamma x1 + (1 - gamma) x2,

    so each child is uniform on the parents' interval extended by alpha times its length on
    each side."""
    gamma = (1.0 + 2.0 * alpha) * _rand(p1.shape, p1, generator) - alpha
    return (1.0 - gamma) * p1 + gamma * p2, gamma * p1 + (1.0 - gamma) * p2


def cx_sbx(p1: torch.Tensor, p2: torch.Tensor, generator: torch.Generator, eta: float = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulated binary crossover SBX (Deb & Agrawal 1995, *Simulated binary crossover for
    continuous search space*, Complex Systems 9; DEAP ``tools.cxSimulatedBinary``): per gene

        beta = (2u)^(1/(eta+1))            if u <= 1/2,
        beta = (1/(2(1-u)))^(1/(eta+1))    otherwise,
        c1 = ((1+beta) x1 + (1-beta) x2)/2,   c2 = ((1-beta) x1 + (1+beta) x2)/2.

    Large ``eta`` keeps children near their parents (eta = 20 is Deb's usual choice)."""
    u = _rand(p1.shape, p1, generator)
    beta = torch.where(u <= 0.5, 2.0 * u, 1.0 / (2.0 * (1.0 - u))) ** (1.0 / (eta + 1.0))
    return 0.5 * ((1 + beta) * p1 + (1 - beta) * p2), 0.5 * ((1 - beta) * p1 + (1 + beta) * p2)


def cx_arithmetic(p1: torch.Tensor, p2: torch.Tensor, generator: torch.Generator, weight: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole arithmetic crossover (Michalewicz 1996, *Genetic Algorithms + Data Structures =
    Evolution Programs*, ch. 6): one weight ``a`` per pair,

        c1 = a x1 + (1 - a) x2,     c2 = (1 - a) x1 + a x2,

    with ``a ~ U(0, 1)`` when ``weight`` is None, else ``a = weight``.  ``weight = 0.5`` is
    intermediate recombination (both children at the parents' midpoint; Rechenberg / Schwefel's
    ES recombination).  DEAP has no counterpart."""
    if weight is None:
        a = _rand(p1.shape[:-1] + (1,), p1, generator)
    else:
        a = torch.full(p1.shape[:-1] + (1,), float(weight), device=p1.device, dtype=p1.dtype)
    return a * p1 + (1 - a) * p2, (1 - a) * p1 + a * p2


def mate_pairs(offspring: torch.Tensor, crossover: Crossover, prob: float, generator: torch.Generator) -> torch.Tensor:
    """Apply ``crossover`` to the adjacent pairs (0, 1), (2, 3), ... of ``offspring`` ``[R, M, D]``,
    each pair with probability ``prob`` (DEAP ``algorithms.varAnd``); an odd last individual is
    left as it is."""
    R, M, D = offspring.shape
    half = M // 2
    if half == 0 or prob <= 0:
        return offspring.clone()
    a, b = offspring[:, 0 : 2 * half : 2], offspring[:, 1 : 2 * half : 2]
    c1, c2 = crossover(a, b, generator)
    do = _rand((R, half, 1), offspring, generator) < prob
    out = offspring.clone()
    out[:, 0 : 2 * half : 2] = torch.where(do, c1, a)
    out[:, 1 : 2 * half : 2] = torch.where(do, c2, b)
    return out


# ----------------------------------------------------------------------------- mutation


def mut_gaussian(x: torch.Tensor, generator: torch.Generator, sigma: float, indpb: float, mu: float = 0.0) -> torch.Tensor:
    """Gaussian mutation (DEAP ``tools.mutGaussian``): each gene independently, with probability
    ``indpb``, gets ``+ N(mu, sigma^2)``.  So the number of mutated genes of an individual is
    Binomial(D, indpb) and a mutated gene's change has mean mu and standard deviation sigma."""
    hit = _rand(x.shape, x, generator) < indpb
    if x.device.type != "cpu":  # a GPU draws every gene's normal faster than it finds the hits
        step = mu + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return torch.where(hit, x + step, x)
    # On the CPU the normal is drawn for the mutating genes only, as DEAP's mutGaussian does
    # (random() per gene, gauss() on a hit): with indpb = 1/D that is 1 draw in D, and the
    # full-size randn was a fifth of a GA generation.  Same distribution, different stream.
    return add_at(x, hit, lambda k: mu + sigma * torch.randn(k, generator=generator, dtype=x.dtype))


def add_at(x: torch.Tensor, mask: torch.Tensor, draw: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """A copy of ``x`` with ``draw(k)`` added where ``mask`` holds (k = the number of hits; ``mask``
    as ``x``, or ``[..., 1]`` to move whole rows, then ``draw(k)`` is ``[k, x.shape[-1]]``)."""
    out = x.clone(memory_format=torch.contiguous_format)
    # nonzero sizes its output from the data: free on the CPU, a synchronisation on a GPU (the
    # engines take this path on the CPU only)
    with host_side() if x.device.type == "cpu" else contextlib.nullcontext():
        where = mask.reshape(-1).nonzero().squeeze(1)
    if mask.shape == x.shape:
        if where.numel():
            out.view(-1).index_add_(0, where, draw(where.numel()))
        return out
    rows = where
    if rows.numel():
        out.view(-1, x.shape[-1]).index_add_(0, rows, draw(rows.numel()))
    return out


def mut_polynomial(x: torch.Tensor, generator: torch.Generator, eta: float, low: float | torch.Tensor,
                   up: float | torch.Tensor, indpb: float) -> torch.Tensor:
    """Bounded polynomial mutation (Deb & Goyal 1996, *A combined genetic adaptive search
    (GeneAS)*; the NSGA-II C code; DEAP ``tools.mutPolynomialBounded``): each gene with
    probability ``indpb``, with ``d1 = (x - low)/(up - low)``, ``d2 = (up - x)/(up - low)``,
    ``u ~ U(0, 1)``, ``m = 1/(eta + 1)``:

        u < 1/2:  dq = [2u + (1 - 2u)(1 - d1)^(eta+1)]^m - 1
        u >= 1/2: dq = 1 - [2(1 - u) + 2(u - 1/2)(1 - d2)^(eta+1)]^m
        x' = clip(x + dq (up - low), low, up).

    ``low``/``up`` are floats or tensors broadcastable to ``x``."""
    # a float becomes a device scalar by a fill, not an upload (no host synchronisation on a GPU)
    low = low.to(x) if isinstance(low, torch.Tensor) else torch.full((), float(low), device=x.device, dtype=x.dtype)
    up = up.to(x) if isinstance(up, torch.Tensor) else torch.full((), float(up), device=x.device, dtype=x.dtype)
    span = up - low
    hit = _rand(x.shape, x, generator) < indpb
    u = _rand(x.shape, x, generator)
    m = 1.0 / (eta + 1.0)
    d1 = ((x - low) / span).clamp(0, 1)
    d2 = ((up - x) / span).clamp(0, 1)
    lower = (2 * u + (1 - 2 * u) * (1 - d1) ** (eta + 1)).clamp_min(0) ** m - 1
    upper = 1 - (2 * (1 - u) + 2 * (u - 0.5) * (1 - d2) ** (eta + 1)).clamp_min(0) ** m
    dq = torch.where(u < 0.5, lower, upper)
    moved = torch.minimum(torch.maximum(x + dq * span, low), up)
    return torch.where(hit, moved, x)


# ----------------------------------------------------------------------------- elitism


def elitism(parents: torch.Tensor, parent_losses: torch.Tensor, offspring: torch.Tensor,
            offspring_losses: torch.Tensor, n_elite: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Elitism (De Jong 1975): the ``n_elite`` best parents replace the ``n_elite`` worst
    offspring, so the best loss found so far (as evaluated) never gets worse.  Returns the new
    population and its losses."""
    if n_elite <= 0:
        return offspring, offspring_losses
    elite = sel_best(parent_losses, n_elite)
    key = torch.nan_to_num(offspring_losses, nan=math.inf, posinf=math.inf)
    if n_elite == 1:  # argmax returns the first maximum, as the stable descending sort does
        worst = key.argmax(dim=1, keepdim=True)
    else:
        worst = key.argsort(dim=1, descending=True, stable=True)[:, :n_elite]  # non-finite first
    pop, los = offspring.clone(), offspring_losses.clone()
    pop.scatter_(1, worst.unsqueeze(-1).expand(-1, -1, pop.shape[-1]), gather(parents, elite))
    los.scatter_(1, worst, torch.gather(parent_losses, 1, elite))
    return pop, los


# ----------------------------------------------------------------------------- population measures


def diversity(population: torch.Tensor) -> torch.Tensor:
    """``[R]``: root-mean-square distance of the members to the population centroid,
    ``sqrt(tr G)`` with G the population covariance (divisor P)."""
    return genetic_variance(population).clamp_min(0).sqrt()


def genetic_variance(population: torch.Tensor) -> torch.Tensor:
    """``[R]``: trace of the population covariance matrix G (divisor P), ``sum_d Var_p(x_d)``."""
    centred = population - population.mean(dim=1, keepdim=True)
    return (centred * centred).sum(dim=2).mean(dim=1)
