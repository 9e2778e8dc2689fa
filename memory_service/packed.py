"""A BERT sentence encoder that computes on real tokens only.

`SentenceTransformer.encode` pads every text of a model batch to the longest one, so a
batch of chat prompts from 5 to 80 words spends most of its time on padding unless the texts
were sorted by length first, which a service embedding whatever requests arrive together
cannot do. Here the token-wise layers (every linear layer, layer norm and activation: almost
all of the compute) run on the batch's tokens packed end to end; only attention, which mixes
tokens within a text, sees a padded view. Mean pooling over each text's tokens then gives the
vectors `encode()` gives, to float rounding. The weights are laid out once for this (query,
key and value fused; bfloat16 copies when asked), so a call costs the same per token
whether it carries one short query or a full batch.

It applies to sentence-transformers models made of a BERT transformer, mean pooling and
optionally normalization (all-MiniLM-L6-v2 and its family); `PackedBertEncoder.supports`
tells, and the embedder falls back to `encode()` for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

# Tokens per forward pass: bounds the memory of the padded attention views.
MAX_PASS_TOKENS = 8_192
# Attention runs on groups of similar length: a group's longest sequence is at most this
# many times its shortest, or this many tokens longer.
ATTENTION_PAD_RATIO = 1.25
ATTENTION_PAD_TOKENS = 8


def _modules(model: SentenceTransformer) -> list[Any]:
    return list(model.children())


@dataclass(frozen=True)
class _Layer:
    """One encoder layer's weights in the compute dtype; layer norms stay float32."""

    qkv: tuple[torch.Tensor, torch.Tensor]
    attn_out: tuple[torch.Tensor, torch.Tensor]
    attn_norm: torch.nn.LayerNorm
    inner: tuple[torch.Tensor, torch.Tensor]
    out: tuple[torch.Tensor, torch.Tensor]
    out_norm: torch.nn.LayerNorm


class PackedBertEncoder:
    """Unit-length embeddings of token sequences, each already within the model window.

    With `precision="bfloat16"` the matrix products and attention run in bfloat16 on weights
    converted once, while embeddings, residual sums, layer norms and pooling stay float32.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        truncate_dim: int | None = None,
        precision: str = "float32",
    ) -> None:
        import torch

        if not self.supports(model):
            raise ValueError("model is not a BERT encoder with mean pooling")
        bert = _modules(model)[0].auto_model
        config = bert.config
        self.heads = int(config.num_attention_heads)
        self.hidden = int(config.hidden_size)
        self.truncate_dim = truncate_dim
        self.dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        self.embeddings = bert.embeddings
        self.activation = bert.encoder.layer[0].intermediate.intermediate_act_fn

        def linear(*layers: Any) -> tuple[torch.Tensor, torch.Tensor]:
            # One layer in float32 shares the model's own tensors; only fused or converted
            # weights are copied.
            if len(layers) == 1:
                weight, bias = layers[0].weight.detach(), layers[0].bias.detach()
            else:
                weight = torch.cat([layer.weight.detach() for layer in layers])
                bias = torch.cat([layer.bias.detach() for layer in layers])
            return weight.to(self.dtype).contiguous(), bias.to(self.dtype).contiguous()

        self.layers = [
            _Layer(
                # Query, key and value in one product.
                qkv=linear(
                    layer.attention.self.query, layer.attention.self.key, layer.attention.self.value
                ),
                attn_out=linear(layer.attention.output.dense),
                attn_norm=layer.attention.output.LayerNorm,
                inner=linear(layer.intermediate.dense),
                out=linear(layer.output.dense),
                out_norm=layer.output.LayerNorm,
            )
            for layer in bert.encoder.layer
        ]

    @staticmethod
    def supports(model: SentenceTransformer) -> bool:
        modules = _modules(model)
        if len(modules) < 2 or type(modules[0]).__name__ != "Transformer":
            return False
        bert = getattr(modules[0], "auto_model", None)
        config = getattr(bert, "config", None)
        if type(bert).__name__ != "BertModel" or config is None:
            return False
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            return False
        if getattr(modules[0], "do_lower_case", False):
            return False
        pooling = modules[1]
        if type(pooling).__name__ != "Pooling":
            return False
        options = pooling.get_config_dict()
        if options.get("pooling_mode", "mean") != "mean" or not options.get("include_prompt", True):
            return False
        return all(type(m).__name__ == "Normalize" for m in modules[2:])

    def encode(self, sequences: list[list[int]]) -> np.ndarray:
        """One unit vector per sequence of token ids ([CLS] ... [SEP] included)."""
        import torch

        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = np.empty((len(sequences), self.truncate_dim or self.hidden), dtype=np.float32)
        start = 0
        with torch.inference_mode():
            while start < len(order):
                # Similar lengths share a pass, so the attention view pads little.
                end, tokens = start, 0
                while end < len(order) and (
                    end == start or tokens + len(sequences[order[end]]) <= MAX_PASS_TOKENS
                ):
                    tokens += len(sequences[order[end]])
                    end += 1
                part = order[start:end]
                pooled = self._forward([sequences[i] for i in part])
                if self.truncate_dim:
                    pooled = pooled[:, : self.truncate_dim]
                out[part] = torch.nn.functional.normalize(pooled, dim=1).numpy()
                start = end
        return out

    def _forward(self, sequences: list[list[int]]) -> torch.Tensor:
        """Mean-pooled last hidden states (float32), one row per sequence; sequences come
        sorted by length."""
        import torch
        import torch.nn.functional as F

        lengths = torch.tensor([len(s) for s in sequences])
        batch = len(sequences)
        ids = torch.tensor([t for s in sequences for t in s])
        starts = torch.cumsum(lengths, 0) - lengths
        positions = torch.arange(len(ids)) - torch.repeat_interleave(starts, lengths)

        emb = self.embeddings
        x = emb.word_embeddings(ids) + emb.position_embeddings(positions)
        x = emb.LayerNorm(x + emb.token_type_embeddings.weight[0])

        groups = attention_groups([len(s) for s in sequences], self.heads, self.hidden)
        dtype = self.dtype
        for layer in self.layers:
            qkv = F.linear(x.to(dtype), *layer.qkv)
            ctx = torch.cat([group.attend(qkv) for group in groups])
            x = layer.attn_norm(F.linear(ctx, *layer.attn_out).float() + x)
            inner = self.activation(F.linear(x.to(dtype), *layer.inner))
            x = layer.out_norm(F.linear(inner, *layer.out).float() + x)

        owner = torch.repeat_interleave(torch.arange(batch), lengths)
        sums = torch.zeros(batch, self.hidden).index_add_(0, owner, x)
        return sums / lengths[:, None].float()


class AttentionGroup:
    """Attention over consecutive sequences of similar length, in a padded view of their
    own: the padding attention computes on stays small whatever else is in the batch."""

    def __init__(self, lengths: list[int], first_token: int, heads: int, hidden: int) -> None:
        import torch

        self.tokens = slice(first_token, first_token + sum(lengths))
        self.batch, self.longest = len(lengths), max(lengths)
        self.heads, self.hidden = heads, hidden
        # Sequences of one length need neither a mask nor a scatter into the padded view.
        self.even = min(lengths) == self.longest
        if not self.even:
            real = torch.arange(self.longest)[None, :] < torch.tensor(lengths)[:, None]
            self.slots = real.reshape(-1).nonzero().squeeze(1)
            self.key_mask = real[:, None, None, :]

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """The attention output (packed tokens x hidden) for this group's slice of qkv."""
        import torch.nn.functional as F

        q, k, v = qkv[self.tokens].split(self.hidden, dim=1)
        if self.even:
            ctx = F.scaled_dot_product_attention(self._view(q), self._view(k), self._view(v))
            return ctx.transpose(1, 2).reshape(-1, self.hidden)
        ctx = F.scaled_dot_product_attention(
            self._padded(q), self._padded(k), self._padded(v), attn_mask=self.key_mask
        )
        return ctx.transpose(1, 2).reshape(self.batch * self.longest, self.hidden)[self.slots]

    def _view(self, t: torch.Tensor) -> torch.Tensor:
        head_dim = self.hidden // self.heads
        return t.reshape(self.batch, self.longest, self.heads, head_dim).transpose(1, 2)

    def _padded(self, t: torch.Tensor) -> torch.Tensor:
        view = t.new_zeros(self.batch * self.longest, self.hidden)
        view[self.slots] = t
        return self._view(view)


def attention_groups(lengths: list[int], heads: int, hidden: int) -> list[AttentionGroup]:
    """Consecutive runs of the (sorted) lengths in which the longest is at most
    ATTENTION_PAD_RATIO times the shortest, or within ATTENTION_PAD_TOKENS of it."""
    groups: list[AttentionGroup] = []
    start, token = 0, 0
    for end in range(1, len(lengths) + 1):
        if end < len(lengths) and (
            lengths[end] <= lengths[start] * ATTENTION_PAD_RATIO
            or lengths[end] - lengths[start] <= ATTENTION_PAD_TOKENS
        ):
            continue
        run = lengths[start:end]
        groups.append(AttentionGroup(run, token, heads, hidden))
        token += sum(run)
        start = end
    return groups
