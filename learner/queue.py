"""MoCo-style negative queue of past image keys, with per-entry timestamp and sequence id.

Differences from facebookresearch/moco `_dequeue_and_enqueue`, and why:
- any K and batch size: writes wrap around the ring (MoCo asserts K % batch == 0, which the paper's own
  K=64 with a gathered batch of 128 violates); a batch larger than K keeps its last K keys;
- empty slots are masked instead of being filled with random noise, so early steps contrast only real keys;
- each key carries (t_ns, seq_id) so `mask` can drop negatives within Δt of the anchor in the same
  sequence — on correlated video the neighbours of a frame are near-duplicates, i.e. false negatives.
  Δt = 0 masks nothing but empty slots (the paper's setting).
All state is registered buffers, so it lives in `state_dict()` and therefore in checkpoints.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class NegativeQueue(nn.Module):
    def __init__(self, dim: int, K: int):
        super().__init__()
        if K < 1 or dim < 1:
            raise ValueError(f"queue needs K >= 1 and dim >= 1, got K={K}, dim={dim}")
        self.dim, self.K = dim, K
        self.register_buffer("keys", torch.zeros(K, dim))
        self.register_buffer("t_ns", torch.zeros(K, dtype=torch.int64))
        self.register_buffer("seq_id", torch.full((K,), -1, dtype=torch.int64))
        self.register_buffer("valid", torch.zeros(K, dtype=torch.bool))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.int64))

    def __len__(self) -> int:
        return int(self.valid.sum())

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, t_ns: torch.Tensor, seq_id: torch.Tensor) -> None:
        """Append a batch (oldest entries are overwritten; wraps around the end of the ring)."""
        keys = keys.detach()
        b = keys.shape[0]
        if keys.shape[1] != self.dim:
            raise ValueError(f"keys have dim {keys.shape[1]}, queue holds {self.dim}")
        t_ns = torch.as_tensor(t_ns, dtype=torch.int64, device=self.keys.device).reshape(-1)
        seq_id = torch.as_tensor(seq_id, dtype=torch.int64, device=self.keys.device).reshape(-1)
        if b > self.K:     # only the newest K survive
            keys, t_ns, seq_id, skipped = keys[-self.K:], t_ns[-self.K:], seq_id[-self.K:], b - self.K
        else:
            skipped = 0
        n = keys.shape[0]
        ptr = (int(self.ptr) + skipped) % self.K
        idx = (ptr + torch.arange(n, device=self.keys.device)) % self.K
        self.keys[idx] = keys.to(self.keys.dtype)
        self.t_ns[idx] = t_ns
        self.seq_id[idx] = seq_id
        self.valid[idx] = True
        self.ptr.fill_((ptr + n) % self.K)

    def mask(self, anchor_t_ns: torch.Tensor, anchor_seq: torch.Tensor, exclusion_s: float = 0.0) -> torch.Tensor:
        """Bool [B, K]: True where the negative must not be used (empty slot, or same sequence and
        |t - t_anchor| < exclusion_s)."""
        anchor_t_ns = torch.as_tensor(anchor_t_ns, dtype=torch.int64, device=self.keys.device).reshape(-1, 1)
        anchor_seq = torch.as_tensor(anchor_seq, dtype=torch.int64, device=self.keys.device).reshape(-1, 1)
        m = (~self.valid).unsqueeze(0).expand(anchor_t_ns.shape[0], -1)
        if exclusion_s > 0:
            near = (self.t_ns.unsqueeze(0) - anchor_t_ns).abs() < int(round(exclusion_s * 1e9))
            m = m | (near & (self.seq_id.unsqueeze(0) == anchor_seq))
        return m.clone()


@torch.no_grad()
def concat_all_gather(t: torch.Tensor) -> torch.Tensor:
    """All ranks' tensors concatenated in rank order (no autograd); identity without a process group.
    Keys are gathered before enqueueing so every rank holds the same queue (as in MoCo)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out, 0)
