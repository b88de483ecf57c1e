"""InfoNCE (Alloulah et al. Eq. 1; Oord et al. 2018): a (1+K)-way softmax that picks the paired image key
among K negatives. The positive sits at logit index 0 (MoCo convention); masked negatives get -inf, so
they drop out of the denominator exactly."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from learner.queue import NegativeQueue


def info_nce(q: torch.Tensor, k: torch.Tensor, queue, mask: torch.Tensor | None = None,
             temperature: float = 0.07) -> tuple[torch.Tensor, torch.Tensor]:
    """q: radar embeddings (B, D); k: their paired image keys (B, D); queue: (K, D) negatives or a
    NegativeQueue; mask: bool (B, K), True = not a negative. Returns (mean loss, logits (B, 1+K))."""
    negs = queue.keys if isinstance(queue, NegativeQueue) else queue
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    l_pos = (q * k).sum(1, keepdim=True)
    l_neg = q @ negs.detach().float().t()
    if mask is not None:
        l_neg = l_neg.masked_fill(mask, float("-inf"))
    logits = torch.cat([l_pos, l_neg], 1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels), logits


def mi_bound(loss: float, k_negatives: float) -> float:
    """The InfoNCE mutual-information lower bound log(K+1) - L in nats (capped at log(K+1)); K is the
    number of negatives actually contrasted (unmasked), so compare only at equal K."""
    return math.log(k_negatives + 1) - float(loss)


def effective_negatives(mask: torch.Tensor | None, K: int) -> float:
    """Mean count of unmasked negatives per anchor."""
    if mask is None:
        return float(K)
    return float((~mask).sum(1).float().mean())
