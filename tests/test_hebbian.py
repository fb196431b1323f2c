"""Single-layer Hebbian sleep dynamics (paper section 4, appendix A; Figs. 4/5)."""
import argparse
import csv

import numpy as np
import pytest

from bioconv_timm.sleep import dynamics as h


def _problem(seed=0, runs=2, n=6, d=4, m=8):
    rng = np.random.default_rng(seed)
    w0 = 1.0 + rng.standard_normal((runs, n, d))
    xs = 1.0 + rng.standard_normal((m, runs, d))
    C = np.einsum('mrd,mre->rde', xs, xs) / m
    return w0, xs, C


def test_snr_by_hand_and_floor():
    w = np.array([[1.0, 2.0], [3.0, 4.0]])          # col means 2, 3; variances 1, 1
    assert h.snr(w) == pytest.approx((4 + 9) / 2)
    assert h.neg_log_snr(w) == pytest.approx(-np.log(6.5))
    assert h.snr_floor(0.1) == pytest.approx(2 * np.log(0.1 / 1.1))
    np.testing.assert_allclose(h.snr_floor([0.1, 0.01, 0.001]), [-4.7958, -9.2302, -13.8175], atol=1e-4)
    # A.5: with C = I, var(w_init) = 1, mean 1 the eq. 5 fixed point sits at the floor (eq. 20)
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((1000, 3))
    w0 = (w0 - w0.mean(0)) / w0.std(0) + 1.0
    assert h.fixed_point_neg_log_snr(w0, 0.1, x_mean=0.0) == pytest.approx(h.snr_floor(0.1), abs=1e-9)


@pytest.mark.parametrize('biased', [False, True])
def test_expected_update_vanishes_at_closed_form(biased):
    w0, xs, C = _problem()
    mf = h.ALPHA / (1 + h.ALPHA) if biased else 1.0
    ws = h.fixed_point_biased(w0, C, 0.05) if biased else h.fixed_point_unbiased(w0, C, 0.05)
    total = np.zeros_like(w0)
    for x in xs:                                     # mean of the eq. 13/21 increments over the M inputs
        w, mom = ws.copy(), np.zeros_like(w0)
        h.hebbian_step(w, w0, mom, x, 1.0, 0.05, momentum=0.0, mean_factor=mf)
        total += mom
    assert np.abs(total / len(xs)).max() < 1e-12
    if biased:                                       # eq. 25 for C = I
        eye = np.broadcast_to(np.eye(4), C.shape)
        g, a = 0.05, h.ALPHA
        mu = w0.mean(-2, keepdims=True)
        np.testing.assert_allclose(h.fixed_point_biased(w0, eye, g),
                                   g / (1 + g) * (a / (1 + g * (1 + a)) * mu + w0), atol=1e-12)


@pytest.mark.parametrize('biased', [False, True])
def test_simulated_fixed_point_matches_closed_form(biased):
    """Cycling the M inputs with a small, decaying learning rate lands on eq. 19 / eq. 24."""
    w0, xs, C = _problem(runs=4)
    gamma = 0.1
    mf = h.ALPHA / (1 + h.ALPHA) if biased else 1.0
    ws = h.fixed_point_biased(w0, C, gamma) if biased else h.fixed_point_unbiased(w0, C, gamma)
    w, mom = w0.copy(), np.zeros_like(w0)
    for t in range(12000):
        lr = 2e-2 / (1 + t / 300)
        h.hebbian_step(w, w0, mom, xs[t % len(xs)], lr, gamma, momentum=0.9, mean_factor=mf)
    rel = np.linalg.norm(w - ws) / np.linalg.norm(w0 - ws)
    assert rel < 2e-3, rel


def test_eq4_reaches_floor_gamma_01():
    """Fig. 4A dynamics (A.5 settings, k = 3, 3 runs, 1000 iterations) end within 1.0 of the floor."""
    res = h.simulate_fig4('eq4', ks=(3,), gammas=(0.1,), runs=3, iterations=1000, seed=1)
    final = res['curves'][(3, 0.1)][-1]
    assert final <= h.snr_floor(0.1) + 1.0, final
    assert res['curves'][(3, 0.1)][0] > -1.0          # starts near SNR 1


def test_fast_integrator_matches_euler():
    rng = np.random.default_rng(3)
    G, R, N, D = 2, 3, 7, 9
    w0 = 1 + rng.standard_normal((G, R, N, D))
    gam = np.array([0.1, 0.01])
    a = [w0 + 0.1 * rng.standard_normal(w0.shape), 0.01 * rng.standard_normal(w0.shape),
         rng.random((G, R, N)), rng.random((G, R))]
    b = [v.copy() for v in a]
    for it in range(3):                              # three 150 ms windows, new x each
        x = 1 + rng.standard_normal((G, R, D))
        lrs = 10 * h.lr_fig4b(np.arange(it * 150, (it + 1) * 150))
        h.rate_sleep_euler(a[0], w0, a[1], a[2], a[3], x, lrs, gam[:, None, None, None])
        h.rate_sleep_fast(b[0], w0, b[1], b[2], b[3], x, lrs, gam[:, None])
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)
    r_fast = h.simulate_fig4('eq8', ks=(3,), gammas=(0.1, 0.01), n_neurons=8, runs=2, iterations=5, fast=True)
    r_ref = h.simulate_fig4('eq8', ks=(3,), gammas=(0.1, 0.01), n_neurons=8, runs=2, iterations=5, fast=False)
    for key in r_fast['curves']:
        np.testing.assert_allclose(r_fast['curves'][key], r_ref['curves'][key], rtol=1e-9)


def test_rates_reach_eq9_fixed_point():
    rng = np.random.default_rng(0)
    N, D = 20, 9
    w0 = 1 + rng.standard_normal((N, D))
    x = 1 + rng.standard_normal(D)
    w, mom, r, r_inh = w0.copy(), np.zeros_like(w0), np.zeros(N), np.zeros(())
    h.rate_sleep_fast(w, w0, mom, r, r_inh, x, np.zeros(3000), 0.1)
    z = w0 @ x
    r_star = 1.0 + z - z.mean() + z.mean() / (1 + h.ALPHA)
    np.testing.assert_allclose(r, r_star, rtol=1e-8)
    np.testing.assert_array_equal(w, w0)


def test_noisy_inputs_still_share():
    """A.3: per-neuron input noise; the weights still move close to their mean."""
    res = h.simulate_fig4('eq4', ks=(3,), gammas=(0.1,), runs=2, iterations=600, noise_std=0.1)
    assert res['curves'][(3, 0.1)][-1] < h.snr_floor(0.1) + 1.5


def test_cli_quick(tmp_path, capsys):
    from bioconv_timm.cli import main
    assert main(['sleep-sim', '--quick', '--runs', '2', '--iterations', '10',
                 '--figures', '4A', '5A', '4B', '--out-dir', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert 'floor' in out and 'Fig. 4A' in out and 'Fig. 4B' in out
    for fig in ('4A', '5A', '4B'):
        assert (tmp_path / f'fig{fig}.png').stat().st_size > 0
        rows = list(csv.DictReader(open(tmp_path / f'fig{fig}.csv')))
        assert set(rows[0]) == {'iteration', 'k', 'gamma', 'neg_log_snr'}
        assert len(rows) == 9 * 11 if fig != '4B' else len(rows) >= 9 * 2
