"""NT-Xent against hand-computed cases and written-out formulas, and across two gloo processes."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vlp.losses.ntxent import nt_xent_loss


def test_hand_computed_two_pairs():
    """N = 2 in 2D, tau = 0.5. Embeddings z = [a1, a2, p1, p2] = [(1,0), (0,1), (0.6,0.8), (0.8,-0.6)].

    Cosines: a1.a2 = 0, a1.p1 = 0.6, a1.p2 = 0.8, a2.p1 = 0.8, a2.p2 = -0.6, p1.p2 = 0.
    SimCLR loss = mean over the 4 anchors of -log(e^{s+/tau} / sum_{k != i} e^{s_k/tau}).
    """
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.8, -0.6]])
    e = math.exp
    terms = [
        -math.log(e(0.6 / 0.5) / (e(0.0) + e(0.6 / 0.5) + e(0.8 / 0.5))),  # a1: pos p1; neg a2, p2
        -math.log(e(-0.6 / 0.5) / (e(0.0) + e(0.8 / 0.5) + e(-0.6 / 0.5))),  # a2: pos p2; neg a1, p1
        -math.log(e(0.6 / 0.5) / (e(0.6 / 0.5) + e(0.8 / 0.5) + e(0.0))),  # p1: pos a1; neg a2, p2
        -math.log(e(-0.6 / 0.5) / (e(0.8 / 0.5) + e(-0.6 / 0.5) + e(0.0))),  # p2: pos a2; neg a1, p1
    ]
    expected = sum(terms) / 4
    # by hand: a1 and p1 give -log(3.3201 / 9.2731) = 1.0271, a2 and p2 give -log(0.30119 / 6.2542) = 3.0333
    assert expected == pytest.approx((1.0271 + 3.0333) / 2, abs=1e-4)
    got = nt_xent_loss(a, p, temperature=0.5, gather=False)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # cross: only the other kind as negatives; mean of both directions
    cross = [
        -math.log(e(1.2) / (e(1.2) + e(1.6))), -math.log(e(-1.2) / (e(1.6) + e(-1.2))),  # a1, a2 vs p
        -math.log(e(1.2) / (e(1.2) + e(1.6))), -math.log(e(-1.2) / (e(1.6) + e(-1.2))),  # p1, p2 vs a
    ]
    got = nt_xent_loss(a, p, temperature=0.5, negatives="cross", gather=False)
    assert got.item() == pytest.approx(sum(cross) / 4, rel=1e-6)


def _written_out(a, p, tau):
    """SimCLR eq. 1 with a loop over the 2N anchors."""
    z = F.normalize(torch.cat([a, p]), dim=-1).double()
    n = a.shape[0]
    total = 0.0
    for i in range(2 * n):
        j = i + n if i < n else i - n
        sims = [float(z[i] @ z[k]) / tau for k in range(2 * n)]
        denominator = sum(math.exp(s) for k, s in enumerate(sims) if k != i)
        total += -(sims[j] - math.log(denominator))
    return total / (2 * n)


def test_default_temperature_is_005_and_matches_formula():
    g = torch.Generator().manual_seed(0)
    a, p = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    got = nt_xent_loss(a, p, gather=False)
    assert got.item() == pytest.approx(_written_out(a, p, 0.05), rel=1e-5)
    # inputs are L2-normalised inside: scaling changes nothing
    assert nt_xent_loss(3 * a, 0.1 * p, gather=False).item() == pytest.approx(got.item(), rel=1e-5)


def test_matched_pairs_score_lower_than_shuffled():
    g = torch.Generator().manual_seed(1)
    a = F.normalize(torch.randn(8, 16, generator=g), dim=-1)
    p = F.normalize(a + 0.05 * torch.randn(8, 16, generator=g), dim=-1)
    assert nt_xent_loss(a, p, gather=False) < nt_xent_loss(a, p.roll(1, 0), gather=False)


def test_bad_arguments_raise():
    a = torch.randn(3, 4)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(a, torch.randn(2, 4), gather=False)
    with pytest.raises(ValueError, match="negatives"):
        nt_xent_loss(a, a, negatives="other", gather=False)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(a, a, temperature=0.0, gather=False)


# ------------------------------------------------------------------------------------------- two processes
def _setup(n_global, d_in=5, d=4):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n_global, d_in, generator=g), torch.randn(n_global, d_in, generator=g),
            torch.randn(d, d_in, generator=g), torch.randn(d, d_in, generator=g))


def _loss_and_grads(x_a, x_p, w_a, w_p, negatives, gather):
    w_a, w_p = w_a.clone().requires_grad_(), w_p.clone().requires_grad_()
    loss = nt_xent_loss(x_a @ w_a.T, x_p @ w_p.T, temperature=0.2, negatives=negatives, gather=gather)
    loss.backward()
    return loss.detach(), w_a.grad, w_p.grad


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x_a, x_p, w_a, w_p = _setup(8)
    rows = slice(4 * rank, 4 * rank + 4)
    results = {}
    for negatives in ("all", "cross"):
        loss, g_a, g_p = _loss_and_grads(x_a[rows], x_p[rows], w_a, w_p, negatives, gather=True)
        for g in (g_a, g_p):  # what DistributedDataParallel does
            dist.all_reduce(g)
            g /= world
        results[negatives] = {"loss": loss, "g_a": g_a, "g_p": g_p}
    # rank 1 holds no pair (all left out): it still joins the gather, and rank 0 scores its 4 pairs alone
    rows = slice(0, 4) if rank == 0 else slice(0, 0)
    loss, g_a, g_p = _loss_and_grads(x_a[rows], x_p[rows], w_a, w_p, "all", gather=True)
    for g in (g_a, g_p):
        dist.all_reduce(g)
        g /= world
    results["one_empty"] = {"loss": loss, "g_a": g_a, "g_p": g_p}
    loss, g_a, g_p = _loss_and_grads(x_a[:0], x_p[:0], w_a, w_p, "all", gather=True)  # no pair anywhere
    results["both_empty"] = {"loss": loss, "g_a": g_a, "g_p": g_p}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_processes_equal_one_process_on_the_global_batch(tmp_path):
    """Each process holds 4 of the 8 pairs; the mean loss and averaged gradients equal one process on all 8."""
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for negatives in ("all", "cross"):
        loss, g_a, g_p = _loss_and_grads(*_setup(8), negatives, gather=False)
        results = [r[negatives] for r in ranks]
        assert (sum(r["loss"] for r in results) / 2).item() == pytest.approx(loss.item(), rel=1e-5)
        for r in results:
            torch.testing.assert_close(r["g_a"], g_a, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(r["g_p"], g_p, rtol=1e-5, atol=1e-6)
    # one process without pairs: zero there, the other's 4 pairs alone; the averaged gradient is half of theirs
    x_a, x_p, w_a, w_p = _setup(8)
    loss, g_a, g_p = _loss_and_grads(x_a[:4], x_p[:4], w_a, w_p, "all", gather=False)
    empty, full = ranks[1]["one_empty"], ranks[0]["one_empty"]
    assert empty["loss"].item() == 0.0
    assert full["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    for r in (empty, full):
        torch.testing.assert_close(r["g_a"], g_a / 2, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["g_p"], g_p / 2, rtol=1e-5, atol=1e-6)
    for r in ranks:
        assert r["both_empty"]["loss"].item() == 0.0 and r["both_empty"]["g_a"].abs().sum() == 0


def test_no_pairs_give_zero_in_the_graph():
    w = torch.randn(4, 3, requires_grad=True)
    loss = nt_xent_loss(torch.zeros(0, 3) @ w.T, torch.zeros(0, 3) @ w.T, gather=False)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert w.grad is not None and w.grad.abs().sum() == 0
