"""One contrastive update, shared by the offline learner (`train_offline.py`) and the online learner
(`online/trainer.py`). MoCo's order (facebookresearch/moco builder.py `forward`, then main_moco.py's
optimiser step), with a frozen image encoder, so the keys are given rather than computed:

    q     = radar_encoder(radar)          the only trained network
    l_pos = q . k                         k: each pair's own frozen image key (the positive)
    l_neg = q . queue, masked             K past image keys; masked entries are not negatives
    loss  = InfoNCE([l_pos | l_neg] / T)  cross-entropy with the positive at index 0
    backward, optimiser step
    enqueue                               only now, after the step (MoCo): keys that arrive with this
                                          step's pairs never act as negatives of the step that trains on them

The mask (`NegativeQueue.mask`) drops empty slots, the anchor's own pair wherever it sits in the queue
(same sequence and time stamp: a bit-identical frozen key, a false negative the loss can never beat), and
with exclusion_s > 0 every key of the same sequence within exclusion_s of the anchor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from learner.loss import effective_negatives, info_nce, mi_bound
from learner.queue import NegativeQueue, concat_all_gather


@dataclass
class StepResult:
    loss: torch.Tensor    # scalar, detached
    logits: torch.Tensor  # (B, 1 + K), detached; the positive at index 0, masked negatives -inf
    mask: torch.Tensor    # (B, K) bool, True = not a negative for that anchor
    valid: torch.Tensor   # (K,) bool, the queue's filled slots when the mask was taken


def contrastive_step(encoder: nn.Module, opt: torch.optim.Optimizer, queue: NegativeQueue, radar: torch.Tensor,
                     keys: torch.Tensor, t_ns: torch.Tensor, seq: torch.Tensor, *, temperature: float,
                     exclusion_s: float = 0.0, enqueue: tuple | None = None) -> StepResult:
    """Train `encoder` one step on a batch of pairs: radar (B, 2, 128, 128), their image keys (B, D), each
    pair's time (ns) and sequence id (B,). `enqueue` = (keys, t_ns, seq) to push into the queue after the
    step; None pushes this batch's own keys (MoCo). Under DDP pass the DDP-wrapped encoder: the enqueued
    keys are all-gathered in rank order so every rank keeps the same queue."""
    cuda = radar.device.type == "cuda"
    if cuda:
        radar = radar.contiguous(memory_format=torch.channels_last)
    with torch.autocast(radar.device.type, dtype=torch.bfloat16, enabled=cuda):
        q = encoder(radar)
    mask = queue.mask(t_ns, seq, exclusion_s)
    valid = queue.valid.clone()
    loss, logits = info_nce(q.float(), keys, queue, mask, temperature)  # the loss in fp32 even under autocast
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    k, t, s = (keys, t_ns, seq) if enqueue is None else enqueue
    if len(k):
        queue.enqueue(concat_all_gather(k.detach()), concat_all_gather(torch.as_tensor(t, device=k.device)),
                      concat_all_gather(torch.as_tensor(s, device=k.device)))
    return StepResult(loss.detach(), logits.detach(), mask, valid)


def step_stats(res: StepResult) -> dict:
    """What both learners log (docs/online.md, docs/learner.md): the InfoNCE loss; the MI lower bound
    log(K_eff + 1) - L, with K_eff the mean number of unmasked negatives per anchor (compare only at equal
    K); the fraction of filled queue entries that were masked; the (1+K)-way contrast accuracy (optimistic:
    log it, do not judge by it). Each value costs a device sync, so the offline loop calls this only on
    the steps it logs."""
    loss = float(res.loss)
    k_eff = effective_negatives(res.mask, res.mask.shape[1])
    n_valid = int(res.valid.sum())
    masked = int((res.mask & res.valid.unsqueeze(0)).sum())
    return {"loss": loss, "mi_bound": mi_bound(loss, k_eff), "k_eff": k_eff,
            "masked_frac": masked / max(1, n_valid * res.mask.shape[0]),
            "acc1": float((res.logits.argmax(1) == 0).float().mean())}
