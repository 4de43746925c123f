"""What data/ produces and model/ consumes: the special token ids, the padded Batch and
the positions of its real target tokens. A leaf: it imports nothing from the package, so
both sides can build on it without depending on each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

# Fixed for both languages' SentencePiece models, so model and search code can rely on them.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def real_token_positions(targets: torch.Tensor, padding_idx: int = PAD_ID) -> torch.Tensor:
    """targets (B, T) -> (N,) flat positions of its non-padding tokens, ascending.

    On a GPU tensor this waits for the device (the output size depends on the values);
    `Batch.to` calls it while the targets are still on the host.
    """
    return (targets.reshape(-1) != padding_idx).nonzero().squeeze(1)


@dataclass
class Batch:
    """One padded batch. B = sentences, S = source length, T = target length + 1."""

    src: torch.Tensor  # (B, S) source ids, PAD_ID-padded
    src_lengths: torch.Tensor  # (B,) true source lengths, on CPU (pack_padded_sequence)
    tgt_in: torch.Tensor  # (B, T) BOS + target ids: decoder input (teacher forcing)
    tgt_out: torch.Tensor  # (B, T) target ids + EOS: what the decoder must predict
    indices: torch.Tensor  # (B,) dataset positions, to line hypotheses up with references
    # (N,) flat positions in tgt_out (B*T) of its N real tokens; set by `to()`, where
    # tgt_out is still on the host, so the loss selects them without a device sync
    tgt_positions: Optional[torch.Tensor] = None

    def with_target_length(self, length: int) -> "Batch":
        """The same batch with targets PAD-extended to `length` steps; the loss ignores
        padding, so gradients are unchanged (only more decoder steps run)."""
        extra = length - self.tgt_in.size(1)
        if extra <= 0:
            return self
        return Batch(
            src=self.src,
            src_lengths=self.src_lengths,
            tgt_in=torch.nn.functional.pad(self.tgt_in, (0, extra), value=PAD_ID),
            tgt_out=torch.nn.functional.pad(self.tgt_out, (0, extra), value=PAD_ID),
            indices=self.indices,
        )

    def to(self, device: torch.device) -> "Batch":
        """The batch on `device`; src_lengths and indices stay on the host. To a GPU
        from pinned memory: a copy from pageable memory waits for the device, a pinned
        one is queued behind its work."""
        positions = self.tgt_positions
        if positions is None:
            positions = real_token_positions(self.tgt_out)
        pin = torch.device(device).type == "cuda"

        def moved(tensor: torch.Tensor) -> torch.Tensor:
            if pin and tensor.device.type == "cpu" and not tensor.is_pinned():
                tensor = tensor.pin_memory()
            return tensor.to(device, non_blocking=True)

        return Batch(
            src=moved(self.src),
            src_lengths=self.src_lengths,
            tgt_in=moved(self.tgt_in),
            tgt_out=moved(self.tgt_out),
            indices=self.indices,
            tgt_positions=moved(positions),
        )
