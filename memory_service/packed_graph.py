"""The packed BERT encoder's forward pass as one TorchScript graph (see packed.py).

Run op by op from Python, a forward pass takes the GIL back after every one of its ~100
tensor operations, and each time waits for whichever thread holds it: on a service
answering hundreds of requests a second, embedding a 15-token query went from ~11 ms to
~40 ms, and to ~650 ms beside a thread that never lets go of it. A TorchScript graph runs
every operation without the GIL; the Python around it takes it a handful of times.

TorchScript compiles this module from its source, so it imports torch at the top and keeps
its annotations unpostponed.
"""

import warnings
from typing import Any

import torch
import torch.nn.functional as F


def _frozen(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous()


class _GraphLayer(torch.nn.Module):
    """One encoder layer; matrix products in `dtype`, residual sums and norms in float32."""

    qkv_w: torch.Tensor
    qkv_b: torch.Tensor
    attn_out_w: torch.Tensor
    attn_out_b: torch.Tensor
    inner_w: torch.Tensor
    inner_b: torch.Tensor
    out_w: torch.Tensor
    out_b: torch.Tensor
    attn_norm_w: torch.Tensor
    attn_norm_b: torch.Tensor
    out_norm_w: torch.Tensor
    out_norm_b: torch.Tensor

    def __init__(
        self,
        weights: dict[str, tuple[torch.Tensor, torch.Tensor]],
        norms: tuple[Any, Any],
        heads: int,
        hidden: int,
        dtype: torch.dtype,
        approximate: str,
    ) -> None:
        super().__init__()
        for name, (weight, bias) in weights.items():
            self.register_buffer(f"{name}_w", weight)
            self.register_buffer(f"{name}_b", bias)
        attn_norm, out_norm = norms
        self.register_buffer("attn_norm_w", _frozen(attn_norm.weight))
        self.register_buffer("attn_norm_b", _frozen(attn_norm.bias))
        self.register_buffer("out_norm_w", _frozen(out_norm.weight))
        self.register_buffer("out_norm_b", _frozen(out_norm.bias))
        self.attn_eps = float(attn_norm.eps)
        self.out_eps = float(out_norm.eps)
        self.heads = heads
        self.hidden = hidden
        self.dtype = dtype
        self.approximate = approximate

    def _view(self, t: torch.Tensor, batch: int, longest: int) -> torch.Tensor:
        head_dim = self.hidden // self.heads
        return t.reshape(batch, longest, self.heads, head_dim).transpose(1, 2)

    def _attend(
        self,
        qkv: torch.Tensor,
        group: tuple[int, int, int, int],
        slots: torch.Tensor,
        key_mask: torch.Tensor,
    ) -> torch.Tensor:
        first, count, batch, longest = group
        q, k, v = qkv[first : first + count].split(self.hidden, dim=1)
        if slots.numel() == 0:
            # Sequences of one length: neither a mask nor a scatter into a padded view.
            ctx = F.scaled_dot_product_attention(
                self._view(q, batch, longest),
                self._view(k, batch, longest),
                self._view(v, batch, longest),
            )
            return ctx.transpose(1, 2).reshape(count, self.hidden)
        padded = []
        for t in (q, k, v):
            view = t.new_zeros(batch * longest, self.hidden)
            view[slots] = t
            padded.append(self._view(view, batch, longest))
        ctx = F.scaled_dot_product_attention(padded[0], padded[1], padded[2], attn_mask=key_mask)
        return ctx.transpose(1, 2).reshape(batch * longest, self.hidden)[slots]

    def forward(
        self,
        x: torch.Tensor,
        groups: list[tuple[int, int, int, int]],
        slots: list[torch.Tensor],
        key_masks: list[torch.Tensor],
    ) -> torch.Tensor:
        qkv = F.linear(x.to(self.dtype), self.qkv_w, self.qkv_b)
        parts = [self._attend(qkv, groups[i], slots[i], key_masks[i]) for i in range(len(groups))]
        ctx = torch.cat(parts)
        x = F.layer_norm(
            F.linear(ctx, self.attn_out_w, self.attn_out_b).float() + x,
            [self.hidden],
            self.attn_norm_w,
            self.attn_norm_b,
            self.attn_eps,
        )
        inner = F.gelu(
            F.linear(x.to(self.dtype), self.inner_w, self.inner_b), approximate=self.approximate
        )
        return F.layer_norm(
            F.linear(inner, self.out_w, self.out_b).float() + x,
            [self.hidden],
            self.out_norm_w,
            self.out_norm_b,
            self.out_eps,
        )


class EncoderGraph(torch.nn.Module):
    """Embeddings, the encoder layers and mean pooling over packed token sequences."""

    word: torch.Tensor
    position: torch.Tensor
    token_type: torch.Tensor
    norm_w: torch.Tensor
    norm_b: torch.Tensor

    def __init__(
        self, embeddings: Any, layers: list[_GraphLayer], hidden: int, truncate_dim: int
    ) -> None:
        super().__init__()
        self.register_buffer("word", _frozen(embeddings.word_embeddings.weight))
        self.register_buffer("position", _frozen(embeddings.position_embeddings.weight))
        self.register_buffer("token_type", _frozen(embeddings.token_type_embeddings.weight[0]))
        self.register_buffer("norm_w", _frozen(embeddings.LayerNorm.weight))
        self.register_buffer("norm_b", _frozen(embeddings.LayerNorm.bias))
        self.eps = float(embeddings.LayerNorm.eps)
        self.hidden = hidden
        self.truncate_dim = truncate_dim
        self.layers = torch.nn.ModuleList(layers)

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor, groups: list[tuple[int, int, int, int, int]]
    ) -> torch.Tensor:
        """Unit vectors, one row per sequence, of the token ids of all sequences end to end
        with their lengths; groups: (first token, tokens, first sequence, sequences,
        longest) of each run of sequences that attend in a padded view of their own."""
        starts = torch.cumsum(lengths, 0) - lengths
        positions = torch.arange(ids.shape[0]) - torch.repeat_interleave(starts, lengths)
        x = F.embedding(ids, self.word) + F.embedding(positions, self.position) + self.token_type
        x = F.layer_norm(x, [self.hidden], self.norm_w, self.norm_b, self.eps)

        spans: list[tuple[int, int, int, int]] = []
        slots: list[torch.Tensor] = []
        key_masks: list[torch.Tensor] = []
        for first_token, count, first, batch, longest in groups:
            spans.append((first_token, count, batch, longest))
            if count == batch * longest:
                slots.append(torch.empty(0, dtype=torch.long))
                key_masks.append(torch.empty(0, dtype=torch.bool))
            else:
                own = lengths[first : first + batch]
                real = torch.arange(longest)[None, :] < own[:, None]
                slots.append(real.reshape(-1).nonzero().squeeze(1))
                key_masks.append(real[:, None, None, :])
        for layer in self.layers:
            x = layer(x, spans, slots, key_masks)

        batch = lengths.shape[0]
        owner = torch.repeat_interleave(torch.arange(batch), lengths)
        pooled = torch.zeros(batch, self.hidden).index_add_(0, owner, x) / lengths[:, None].float()
        if self.truncate_dim > 0:
            pooled = pooled[:, : self.truncate_dim]
        return F.normalize(pooled, dim=1)


def encoder_graph(
    embeddings: Any,
    layers: list[tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], tuple[Any, Any]]],
    heads: int,
    hidden: int,
    dtype: torch.dtype,
    approximate: str,
    truncate_dim: int = 0,
) -> torch.jit.ScriptModule:
    """The scripted graph over the given weights (shared, not copied); `approximate` is
    F.gelu's ("none" or "tanh"), truncate_dim 0 keeps every dimension."""
    graph_layers = [
        _GraphLayer(weights, norms, heads, hidden, dtype, approximate) for weights, norms in layers
    ]
    module = EncoderGraph(embeddings, graph_layers, hidden, truncate_dim)
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.compile and torch.export, whose
        # programs run from Python (export) or need a compiler at startup (compile); the
        # pinned torch has it, and it is what runs a forward pass without the GIL.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.jit")
        return torch.jit.script(module.eval())
