"""Gathering features across processes, with gradients, for losses whose negatives span the global batch."""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


class GatherWithoutGradientWarning(UserWarning):
    """Negatives were gathered across processes without their gradients."""


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_features(features: torch.Tensor, with_grad: bool = True) -> tuple[torch.Tensor, int]:
    """All rows of `features` from every process, in rank order, and the offset of this process's rows.

    Processes may hold different numbers of rows (a batch that lost a bad sample): rows are padded to the
    largest count for the collective and the padding is cut out again. With `with_grad`, the gather is
    differentiable (`torch.distributed.nn.functional.all_gather`), so each process's loss sends gradients
    to the features of every other process; plain `all_gather` (and `accelerator.gather`) carries none.
    """
    if not is_distributed():
        return features, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    count = torch.tensor([features.shape[0]], device=features.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c.item()) for c in counts]
    longest = max(counts)
    padded = features
    if features.shape[0] < longest:
        pad = features.new_zeros((longest - features.shape[0], *features.shape[1:]))
        padded = torch.cat([features, pad])
    if with_grad:
        pieces = list(dist_fn.all_gather(padded))
    else:
        warnings.warn("features are gathered without gradients (gather_with_grad=False): each process's loss "
                      "sends no gradient to the other processes' rows, so the run's gradient is not the "
                      "single-process gradient of the global batch", GatherWithoutGradientWarning, stacklevel=2)
        pieces = [torch.zeros_like(padded) for _ in range(world)]
        dist.all_gather(pieces, padded.contiguous())
        pieces[rank] = padded  # keep this process's own rows differentiable
    gathered = torch.cat([piece[:n] for piece, n in zip(pieces, counts)])
    return gathered, sum(counts[:rank])
