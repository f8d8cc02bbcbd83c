from __future__ import annotations

import pytest
import torch

from ladabert.pipeline.factorize import break_even_rank, refactor, relative_error, svd_factors


@pytest.mark.parametrize("shape", [(37, 53), (64, 16), (1, 9), (96, 96)])
def test_full_rank_svd_reproduces_the_weight(shape):
    w = torch.randn(*shape)
    u, v = svd_factors(w, min(shape))
    assert u.shape == (shape[0], min(shape)) and v.shape == (min(shape), shape[1])
    assert relative_error(w, u, v) < 1e-5


def test_error_falls_as_rank_grows_and_matches_eckart_young():
    w = torch.randn(60, 40, dtype=torch.float64)
    s = torch.linalg.svdvals(w)
    errors = [relative_error(w, *svd_factors(w, k)) for k in range(1, 41)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    for k in (5, 20):  # the truncated SVD's error is the tail of the singular values
        assert errors[k - 1] == pytest.approx(float(s[k:].norm() / s.norm()), rel=1e-9)


def test_singular_values_are_split_evenly_between_factors():
    w = torch.randn(30, 20, dtype=torch.float64)
    u, v = svd_factors(w, 10)
    assert torch.allclose(u.norm(dim=0), v.norm(dim=1), rtol=1e-9)


def test_refactor_equals_svd_of_the_product():
    u0, v0 = torch.randn(200, 12, dtype=torch.float64), torch.randn(12, 50, dtype=torch.float64)
    u, v = refactor(u0, v0, 5)
    assert u.shape == (200, 5) and v.shape == (5, 50)
    best = svd_factors(u0 @ v0, 5)
    assert torch.allclose(u @ v, best[0] @ best[1], atol=1e-8)
    assert torch.allclose(*(refactor(u0, v0, 12)[0] @ refactor(u0, v0, 12)[1], u0 @ v0), atol=1e-8)


def test_break_even_and_bad_ranks():
    assert break_even_rank(768, 3072) == pytest.approx(614.4)
    with pytest.raises(ValueError, match=r"rank must be in \[1, 4\]"):
        svd_factors(torch.randn(4, 6), 5)
    with pytest.raises(ValueError, match="do not chain"):
        refactor(torch.randn(4, 3), torch.randn(2, 5), 1)


def _cov(n_in: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs with very unequal scales per feature (as in transformer activations) and their covariance."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(500, n_in, generator=g, dtype=torch.float64) * torch.logspace(
        1, -2, n_in, dtype=torch.float64
    )
    return x, x.T @ x / len(x)


@pytest.mark.parametrize("shape", [(37, 53), (64, 16), (1, 9)])
def test_data_aware_full_rank_reproduces_the_weight(shape):
    w = torch.randn(*shape, dtype=torch.float64)
    _, c = _cov(shape[1])
    u, v = svd_factors(w, min(shape), c)
    assert relative_error(w, u, v) < 1e-8
    assert torch.allclose(u.norm(dim=0), v.norm(dim=1), rtol=1e-9)  # components balanced


def test_data_aware_svd_loses_less_on_the_data_than_plain_svd():
    w = torch.randn(40, 30, dtype=torch.float64)
    x, c = _cov(30)
    for k in (3, 10, 20):
        plain, aware = svd_factors(w, k), svd_factors(w, k, c)
        err_plain = torch.linalg.norm(x @ (w - plain[0] @ plain[1]).T)
        err_aware = torch.linalg.norm(x @ (w - aware[0] @ aware[1]).T)
        assert err_aware < 0.7 * err_plain
        # and it is optimal: the weighted error is the tail of the singular values of W L
        s = torch.linalg.svdvals(w @ torch.linalg.cholesky(c))
        assert err_aware / len(x) ** 0.5 == pytest.approx(float(s[k:].norm()), rel=1e-4)


def test_diagonal_covariance_weights_rows_of_an_embedding_table():
    # Read as W^T acting on one-hot tokens: frequent tokens (rows) are reproduced, unseen ones are not.
    table = torch.randn(50, 8, dtype=torch.float64)
    freq = torch.zeros(50, dtype=torch.float64)
    freq[:4] = 0.25
    a, b = svd_factors(table.T, 4, freq)
    approx = (a @ b).T
    assert torch.allclose(approx[:4], table[:4], atol=1e-6)
    assert (approx[4:] - table[4:]).norm() > 0.1 * table[4:].norm()
    with pytest.raises(ValueError, match="does not match"):
        svd_factors(table.T, 4, freq[:10])


def test_data_aware_refactor_equals_data_aware_svd_of_the_product():
    u0, v0 = torch.randn(60, 12, dtype=torch.float64), torch.randn(12, 25, dtype=torch.float64)
    _, c = _cov(25)
    u, v = refactor(u0, v0, 5, c)
    best = svd_factors(u0 @ v0, 5, c)
    assert torch.allclose(u @ v, best[0] @ best[1], atol=1e-8)
    d = torch.rand(25, dtype=torch.float64)
    u, v = refactor(u0, v0, 5, d)
    best = svd_factors(u0 @ v0, 5, d)
    assert torch.allclose(u @ v, best[0] @ best[1], atol=1e-8)
