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

# Tokens per forward pass: bounds the memory of the padded attention view.
MAX_PASS_TOKENS = 8_192


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
        """Mean-pooled last hidden states (float32), one row per sequence."""
        import torch
        import torch.nn.functional as F

        lengths = torch.tensor([len(s) for s in sequences])
        batch, longest = len(sequences), int(lengths.max())
        ids = torch.tensor([t for s in sequences for t in s])
        starts = torch.cumsum(lengths, 0) - lengths
        positions = torch.arange(len(ids)) - torch.repeat_interleave(starts, lengths)

        emb = self.embeddings
        x = emb.word_embeddings(ids) + emb.position_embeddings(positions)
        x = emb.LayerNorm(x + emb.token_type_embeddings.weight[0])

        # Where each packed token sits in a [batch, longest] padded view, and which keys
        # are real: attention is the one step that needs texts apart.
        real = torch.arange(longest)[None, :] < lengths[:, None]
        slots = real.reshape(-1).nonzero().squeeze(1)
        key_mask = real[:, None, None, :]
        head_dim = self.hidden // self.heads
        dtype = self.dtype

        def padded(t: torch.Tensor) -> torch.Tensor:
            view = t.new_zeros(batch * longest, self.hidden)
            view[slots] = t
            return view.view(batch, longest, self.heads, head_dim).transpose(1, 2)

        for layer in self.layers:
            q, k, v = F.linear(x.to(dtype), *layer.qkv).split(self.hidden, dim=1)
            ctx = F.scaled_dot_product_attention(
                padded(q), padded(k), padded(v), attn_mask=key_mask
            )
            ctx = ctx.transpose(1, 2).reshape(batch * longest, self.hidden)[slots]
            x = layer.attn_norm(F.linear(ctx, *layer.attn_out).float() + x)
            inner = self.activation(F.linear(x.to(dtype), *layer.inner))
            x = layer.out_norm(F.linear(inner, *layer.out).float() + x)

        owner = torch.repeat_interleave(torch.arange(batch), lengths)
        sums = torch.zeros(batch, self.hidden).index_add_(0, owner, x)
        return sums / lengths[:, None].float()
