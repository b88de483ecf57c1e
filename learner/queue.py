"""MoCo-style negative queue of past image keys, with per-entry timestamp and sequence id.

Differences from facebookresearch/moco `_dequeue_and_enqueue`, and why:
- any K and batch size: writes wrap around the ring (MoCo asserts K % batch == 0, which the paper's own
  K=64 with a gathered batch of 128 violates); a batch larger than K keeps its last K keys;
- empty slots are masked instead of being filled with random noise, so early steps contrast only real keys;
- each key carries (t_ns, seq_id) so `mask` can drop negatives within Δt of the anchor in the same
  sequence — on correlated video the neighbours of a frame are near-duplicates, i.e. false negatives.
  Δt = 0 (the paper's setting) still drops the anchor's own pair (same sequence, same time): MoCo lets a
  key from an earlier epoch come back as its own negative (moco#24: rare on ImageNet, where the queue is
  ~6 % of the data), but here K is often as large as the pair set and the frozen teacher gives a
  bit-identical key, a false negative whose logit always equals the positive's.
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
        """Bool [B, K]: True where the entry must not be a negative for that anchor: an empty slot, the
        anchor's own pair (same sequence and time stamp), or with exclusion_s > 0 any entry of the same
        sequence with |t - t_anchor| < exclusion_s."""
        anchor_t_ns = torch.as_tensor(anchor_t_ns, dtype=torch.int64, device=self.keys.device).reshape(-1, 1)
        anchor_seq = torch.as_tensor(anchor_seq, dtype=torch.int64, device=self.keys.device).reshape(-1, 1)
        window_ns = max(1, int(round(exclusion_s * 1e9)))  # 1 ns: only the identical time stamp (itself)
        near = (self.t_ns.unsqueeze(0) - anchor_t_ns).abs() < window_ns
        return (~self.valid).unsqueeze(0) | (near & (self.seq_id.unsqueeze(0) == anchor_seq))


class PendingKeys:
    """Stream keys admitted since the last training step, held back until that step is taken, which then
    enqueues them (MoCo's order): a pair's key is never a negative in the step that first trains on it.
    The online learner hands this to its ingest in place of the queue; ingest calls `enqueue` as it would
    on the queue and reads `.keys.device` to place the tensors. Bounded: more than K keys would overwrite
    each other in the queue anyway, so only the newest K are held."""

    def __init__(self, queue: NegativeQueue):
        self.queue = queue
        self.parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.n = 0

    @property
    def keys(self) -> torch.Tensor:
        return self.queue.keys

    def __len__(self) -> int:
        return self.n

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, t_ns, seq_id) -> None:
        dev = self.queue.keys.device
        t_ns = torch.as_tensor(t_ns, dtype=torch.int64, device=dev).reshape(-1)
        seq_id = torch.as_tensor(seq_id, dtype=torch.int64, device=dev).reshape(-1)
        if not len(t_ns):
            return
        self.parts.append((keys.detach().to(dev), t_ns, seq_id))
        self.n += len(t_ns)
        if self.n > 2 * self.queue.K:  # compact now and then; take() keeps the newest K
            newest = self.take()
            self.parts, self.n = [newest], len(newest[1])

    def take(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keys, t_ns, seq_id) of everything held, newest K at most, oldest first; empties the hold."""
        dev = self.queue.keys.device
        if not self.parts:
            return (torch.zeros(0, self.queue.dim, device=dev), torch.zeros(0, dtype=torch.int64, device=dev),
                    torch.zeros(0, dtype=torch.int64, device=dev))
        out = tuple(torch.cat([p[i] for p in self.parts])[-self.queue.K:] for i in range(3))
        self.parts, self.n = [], 0
        return out

    def state_dict(self) -> dict:
        k, t, s = self.take()
        self.enqueue(k, t, s)  # put them back: saving must not change what the next step enqueues
        return {"keys": k.cpu(), "t_ns": t.cpu(), "seq_id": s.cpu()}

    def load_state_dict(self, sd: dict) -> None:
        self.parts, self.n = [], 0
        if len(sd["t_ns"]):
            self.enqueue(sd["keys"], sd["t_ns"], sd["seq_id"])


@torch.no_grad()
def concat_all_gather(t: torch.Tensor) -> torch.Tensor:
    """All ranks' tensors concatenated in rank order (no autograd); identity without a process group.
    Keys are gathered before enqueueing so every rank holds the same queue (as in MoCo)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out, 0)
