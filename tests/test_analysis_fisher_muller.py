"""Fisher-Muller: the recombination and mutation operators on exact cases, Kimura's fixation
probability, the theory's times, and a tiny run of the analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evosgd.analysis.fisher_muller import (
    FisherMullerParams,
    fixation_probability,
    measure_fisher_muller,
    mutation_matrix,
    recombination_tensor,
    sweep_times,
    time_to_combine,
    time_with_recombination,
    time_without_recombination,
)


def test_recombination_of_two_loci_is_the_textbook_gamete_table():
    T = recombination_tensor(2)  # genotypes 00, 01, 10, 11
    assert np.allclose(T.sum(axis=0), 1.0)
    # parents 01 x 10 give each of the four gametes with probability 1/4 under free recombination
    assert np.allclose(T[:, 1, 2], [0.25, 0.25, 0.25, 0.25])
    # identical parents give themselves
    assert T[3, 3, 3] == 1.0
    # linkage disequilibrium D = p11 p00 - p01 p10 halves per generation (r = 1/2)
    p = np.array([0.5, 0.0, 0.0, 0.5])
    q = np.einsum("gab,a,b->g", T, p, p)
    assert q[3] * q[0] - q[1] * q[2] == pytest.approx(0.5 * (0.25 - 0.0))


def test_mutation_matrix_is_one_way():
    M = mutation_matrix(2, 0.1)
    assert np.allclose(M.sum(axis=1), 1.0)
    assert M[0, 3] == pytest.approx(0.01) and M[3, 0] == 0.0 and M[3, 3] == 1.0


def test_kimura_and_sweep_times():
    s, n = 0.05, 1000
    se = math.log1p(s)
    assert fixation_probability(s, n) == pytest.approx((1 - math.exp(-2 * se)) / (1 - math.exp(-2 * n * se)))
    th, tf = sweep_times(s, n)
    assert tf > th > 0
    # the advantage of recombination is exactly (L - 1) t_fix
    assert time_without_recombination(n, 1e-5, s, 3) - time_with_recombination(n, 1e-5, s, 3) == pytest.approx(2 * tf)


def test_neutral_frequencies_and_deterministic_single_locus():
    # no selection, no mutation: nothing ever happens (the all-zero population stays)
    t = time_to_combine(50, 0.0, 0.01, 2, 1.0, 3, 20, seed=1)
    assert np.isinf(t).all()


def test_analysis_tiny():
    p = FisherMullerParams(population_size=100, selection=0.2, loci=2, mutation_rates=[1e-3, 1e-2], replicates=6,
                           max_generations=5000)
    r = measure_fisher_muller(p, seed=3)
    v = r.tables["verdicts"]
    assert len(v) == 4
    assert (r.tables["times"].time_sex > 0).all()
