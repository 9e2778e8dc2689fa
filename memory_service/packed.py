"""A BERT sentence encoder that computes on real tokens only.

`SentenceTransformer.encode` pads every text of a model batch to the longest one, so a
batch of chat prompts from 5 to 80 words spends most of its time on padding unless the texts
were sorted by length first, which a service embedding whatever requests arrive together
cannot do. Here the token-wise layers (every linear layer, layer norm and activation: almost
all of the compute) run on the batch's tokens packed end to end; only attention, which mixes
tokens within a text, sees a padded view. Mean pooling over each text's tokens then gives the
vectors `encode()` gives, to float rounding. The weights are laid out once for this (query,
key and value fused; bfloat16 copies when asked), so a call costs the same per token
whether it carries one short query or a full batch. The pass itself is one TorchScript
graph (packed_graph.py), which runs without the GIL.

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
# transformers' names for the activations the encoder has: exact and tanh GELU.
ACTIVATIONS = {"gelu": "none", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh"}


def _modules(model: SentenceTransformer) -> list[Any]:
    return list(model.children())


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

        from memory_service.packed_graph import encoder_graph

        if not self.supports(model):
            raise ValueError("model is not a BERT encoder with mean pooling")
        bert = _modules(model)[0].auto_model
        config = bert.config
        self.heads = int(config.num_attention_heads)
        self.hidden = int(config.hidden_size)
        self.truncate_dim = truncate_dim
        self.dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32

        def linear(*layers: Any) -> tuple[torch.Tensor, torch.Tensor]:
            # One layer in float32 shares the model's own tensors; only fused or converted
            # weights are copied.
            if len(layers) == 1:
                weight, bias = layers[0].weight.detach(), layers[0].bias.detach()
            else:
                weight = torch.cat([layer.weight.detach() for layer in layers])
                bias = torch.cat([layer.bias.detach() for layer in layers])
            return weight.to(self.dtype).contiguous(), bias.to(self.dtype).contiguous()

        layers = [
            (
                {
                    # Query, key and value in one product.
                    "qkv": linear(
                        layer.attention.self.query,
                        layer.attention.self.key,
                        layer.attention.self.value,
                    ),
                    "attn_out": linear(layer.attention.output.dense),
                    "inner": linear(layer.intermediate.dense),
                    "out": linear(layer.output.dense),
                },
                (layer.attention.output.LayerNorm, layer.output.LayerNorm),
            )
            for layer in bert.encoder.layer
        ]
        self.graph = encoder_graph(
            bert.embeddings,
            layers,
            self.heads,
            self.hidden,
            self.dtype,
            ACTIVATIONS[config.hidden_act],
            truncate_dim or 0,
        )

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
        if getattr(config, "hidden_act", None) not in ACTIVATIONS:
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
                out[part] = self._forward([sequences[i] for i in part]).numpy()
                start = end
        return out

    def _forward(self, sequences: list[list[int]]) -> torch.Tensor:
        """Unit vectors, one row per sequence; sequences come sorted by length. All tensor
        work is in the graph: each operation run from here would take the GIL back."""
        import torch

        lengths = [len(s) for s in sequences]
        groups = attention_groups(lengths)
        return self.graph(
            torch.tensor([t for s in sequences for t in s]),
            torch.tensor(lengths),
            [
                (g.tokens.start, g.tokens.stop - g.tokens.start, g.first, g.batch, g.longest)
                for g in groups
            ],
        )


@dataclass(frozen=True, slots=True)
class AttentionGroup:
    """Consecutive sequences of similar length, which attend in a padded view of their own:
    the padding attention computes on stays small whatever else is in the batch."""

    tokens: slice
    # Index of the group's first sequence, the number of them and the longest's length.
    first: int
    batch: int
    longest: int
    # All of one length: neither a mask nor a scatter into the padded view.
    even: bool


def attention_groups(lengths: list[int]) -> list[AttentionGroup]:
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
        tokens = slice(token, token + sum(run))
        groups.append(AttentionGroup(tokens, start, len(run), max(run), min(run) == max(run)))
        token = tokens.stop
        start = end
    return groups
