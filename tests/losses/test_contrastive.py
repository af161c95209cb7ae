"""Global losses against reference formulas, and across two real processes (gloo) against one process."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vlp.losses.contrastive import clip_loss, siglip_loss


def _embeds(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g), dim=-1), F.normalize(torch.randn(n, d, generator=g), dim=-1))


def test_clip_loss_matches_written_out_formula():
    img, txt = _embeds()
    scale = torch.tensor(10.0)
    losses = clip_loss(img, txt, scale, gather=False)
    n = img.shape[0]
    i2t = t2i = 0.0
    for i in range(n):
        sims = [float(scale * img[i] @ txt[j]) for j in range(n)]
        i2t += -(sims[i] - math.log(sum(math.exp(s) for s in sims))) / n
        sims = [float(scale * txt[i] @ img[j]) for j in range(n)]
        t2i += -(sims[i] - math.log(sum(math.exp(s) for s in sims))) / n
    assert losses["global_image_to_text"].item() == pytest.approx(i2t, rel=1e-5)
    assert losses["global_text_to_image"].item() == pytest.approx(t2i, rel=1e-5)


def test_siglip_loss_matches_written_out_formula():
    img, txt = _embeds()
    scale, bias = torch.tensor(10.0), torch.tensor(-3.0)
    got = siglip_loss(img, txt, scale, bias, gather=False)["global_sigmoid"]
    n = img.shape[0]
    ref = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = float(scale * img[i] @ txt[j] + bias)
            ref += -math.log(1.0 / (1.0 + math.exp(-z * logit)))
    assert got.item() == pytest.approx(ref / n, rel=1e-5)


def test_perfect_alignment_gives_low_loss():
    img, _ = _embeds()
    assert clip_loss(img, img, torch.tensor(100.0), gather=False)["global_image_to_text"] < 1e-3


# ------------------------------------------------------------------------------------------- two processes
def _setup(n_global, d_in=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_img, x_txt = torch.randn(n_global, d_in, generator=g), torch.randn(n_global, d_in, generator=g)
    w_img, w_txt = torch.randn(d, d_in, generator=g), torch.randn(d, d_in, generator=g)
    return x_img, x_txt, w_img, w_txt


def _loss_and_grads(x_img, x_txt, w_img, w_txt, kind, gather):
    w_img, w_txt = w_img.clone().requires_grad_(), w_txt.clone().requires_grad_()
    img, txt = F.normalize(x_img @ w_img.T, dim=-1), F.normalize(x_txt @ w_txt.T, dim=-1)
    scale = torch.tensor(5.0)
    if kind == "clip":
        terms = clip_loss(img, txt, scale, gather=gather)
    else:
        terms = siglip_loss(img, txt, scale, torch.tensor(-2.0), gather=gather)
    loss = sum(terms.values())
    loss.backward()
    return loss.detach(), w_img.grad, w_txt.grad


def _worker(rank, world, init_file, out_dir, sizes, kind):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x_img, x_txt, w_img, w_txt = _setup(sum(sizes))
    start = sum(sizes[:rank])
    rows = slice(start, start + sizes[rank])
    loss, g_img, g_txt = _loss_and_grads(x_img[rows], x_txt[rows], w_img, w_txt, kind, gather=True)
    for g in (g_img, g_txt):  # what DistributedDataParallel does: average the gradients over processes
        dist.all_reduce(g)
        g /= world
    torch.save({"loss": loss, "g_img": g_img, "g_txt": g_txt}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _run_two_processes(tmp_path, sizes, kind):
    init_file = tmp_path / "init"
    mp.start_processes(_worker, args=(2, str(init_file), str(tmp_path), sizes, kind), nprocs=2, join=True,
                       start_method="spawn")
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_two_processes_equal_one_process_on_the_global_batch(tmp_path, kind):
    sizes = (4, 4)
    results = _run_two_processes(tmp_path, sizes, kind)
    x_img, x_txt, w_img, w_txt = _setup(sum(sizes))
    loss, g_img, g_txt = _loss_and_grads(x_img, x_txt, w_img, w_txt, kind, gather=False)
    mean_loss = sum(r["loss"] for r in results) / 2
    assert mean_loss.item() == pytest.approx(loss.item(), rel=1e-5)
    for r in results:  # every process ends with the single-process gradient
        torch.testing.assert_close(r["g_img"], g_img, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["g_txt"], g_txt, rtol=1e-5, atol=1e-6)


def test_two_processes_with_uneven_batches_score_against_all_rows(tmp_path):
    """A process that lost a bad row still sees every other row as a negative."""
    sizes = (3, 5)
    results = _run_two_processes(tmp_path, sizes, "clip")
    x_img, x_txt, w_img, w_txt = _setup(sum(sizes))
    img = F.normalize(x_img @ w_img.T, dim=-1)
    txt = F.normalize(x_txt @ w_txt.T, dim=-1)
    logits = 5.0 * img @ txt.T
    labels = torch.arange(8)
    for rank, rows in enumerate((slice(0, 3), slice(3, 8))):
        i2t = F.cross_entropy(logits[rows], labels[rows])
        t2i = F.cross_entropy(logits.T[rows], labels[rows])
        assert results[rank]["loss"].item() == pytest.approx((i2t + t2i).item(), rel=1e-5)


def _gather_without_grad_worker(rank, world, init_file, out_dir):
    import warnings

    from vlp.losses.distributed import GatherWithoutGradientWarning

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x_img, x_txt, w_img, w_txt = _setup(4)
    img, txt = F.normalize(x_img @ w_img.T, dim=-1), F.normalize(x_txt @ w_txt.T, dim=-1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clip_loss(img, txt, torch.tensor(5.0), gather=True, with_grad=False)
        clip_loss(img, txt, torch.tensor(5.0), gather=True, with_grad=True)
    kinds = [w.category.__name__ for w in caught if issubclass(w.category, GatherWithoutGradientWarning)]
    torch.save({"warnings": kinds}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_gathering_without_gradients_warns_on_every_process(tmp_path):
    mp.start_processes(_gather_without_grad_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    for rank in range(2):  # two gathers (images, texts) without gradients warn; the ones with gradients do not
        assert torch.load(tmp_path / f"rank{rank}.pt")["warnings"] == ["GatherWithoutGradientWarning"] * 2
