"""``max_tokens`` reductions of an encoder's token sequence ``[B, T, D]`` (mask ``[B, T]`` bool), one per way of
keeping a kind's structure; each [`ModalityKind`] picks its own in ``reduce_tokens``:

- [`binned_tokens`] (audio): each sample's own valid frames are averaged into ``min(max_tokens, length)`` equal
  consecutive bins, with a new mask, so a sample alone and in a padded batch give the same tokens;
- [`pooled_grid_tokens`] (image): the 2-D patch grid (or CNN feature map) is average-pooled to at most
  ``max_tokens - prefix`` cells (``adaptive_avg_pool2d``), the prefix tokens (CLS, distillation, registers) kept;
  a token sequence is read as ``prefix + g*g`` with the largest square ``g*g`` (square patch grids);
- [`first_valid_tokens`] (text, and the default): the first ``max_tokens`` valid tokens, wherever padding is.

Model layer: torch only.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def _first_valid(hidden: torch.Tensor, mask: torch.Tensor, count: torch.Tensor, width: int):
    """Scatter each row's valid tokens, in order, into ``[B, width, D]`` keeping those of rank < ``count``."""
    rank = mask.long().cumsum(dim=1) - 1
    keep = mask & (rank < count.unsqueeze(1))
    out = hidden.new_zeros(hidden.shape[0], width + 1, hidden.shape[-1])
    index = torch.where(keep, rank, torch.full_like(rank, width))  # dropped tokens go to a spare slot
    out = out.scatter(1, index.unsqueeze(-1).expand_as(hidden), hidden)
    new_mask = torch.arange(width, device=mask.device).unsqueeze(0) < count.unsqueeze(1)
    return out[:, :width], new_mask


def binned_tokens(
    hidden: torch.Tensor, mask: torch.Tensor, max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average each row's valid frames into ``min(max_tokens, length)`` consecutive equal bins."""
    lengths = mask.long().sum(dim=1)
    bins = lengths.clamp(max=max_tokens)
    rank = mask.long().cumsum(dim=1) - 1
    slot = torch.div(rank * bins.unsqueeze(1), lengths.clamp(min=1).unsqueeze(1), rounding_mode="floor")
    width = int(bins.max()) if hidden.shape[0] else 0
    slot = torch.where(mask, slot, torch.full_like(slot, width))
    sums = hidden.new_zeros(hidden.shape[0], width + 1, hidden.shape[-1])
    sums = sums.scatter_add(
        1, slot.unsqueeze(-1).expand_as(hidden), hidden * mask.unsqueeze(-1).to(hidden.dtype)
    )
    counts = torch.zeros(hidden.shape[0], width + 1, device=hidden.device, dtype=hidden.dtype)
    counts = counts.scatter_add(1, slot, mask.to(hidden.dtype))
    new_mask = torch.arange(width, device=mask.device).unsqueeze(0) < bins.unsqueeze(1)
    return sums[:, :width] / counts[:, :width].clamp(min=1).unsqueeze(-1), new_mask


def pooled_grid_tokens(
    hidden: torch.Tensor, mask: torch.Tensor, max_tokens: int, grid: tuple[int, int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool a patch grid to at most ``max_tokens`` tokens (prefix tokens kept); ``grid`` for a CNN map."""
    if grid is None:
        side = math.isqrt(hidden.shape[1])
        prefix, grid = hidden.shape[1] - side * side, (side, side)
    else:
        prefix = 0
    cells = max_tokens - prefix
    if cells < 1:
        raise ValueError(
            f"`max_tokens` {max_tokens} leaves no patch token next to the {prefix} prefix token(s); use more"
        )
    if grid[0] * grid[1] <= cells:
        return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    side = math.isqrt(cells)
    target = (min(grid[0], side), min(grid[1], side))
    patches = hidden[:, prefix:].transpose(1, 2).unflatten(2, grid)  # [B, D, H, W]
    pooled = F.adaptive_avg_pool2d(patches, target).flatten(2).transpose(1, 2)
    tokens = torch.cat([hidden[:, :prefix], pooled], dim=1)
    return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=hidden.device)


def first_valid_tokens(
    hidden: torch.Tensor, mask: torch.Tensor, max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's first ``max_tokens`` valid tokens, in order, left-aligned (``[B, T', D]``, new mask)."""
    count = mask.long().sum(dim=1).clamp(max=max_tokens)
    return _first_valid(hidden, mask, count, int(count.max()) if hidden.shape[0] else 0)
