"""What a tensor name says about its place in a transformer: layer index and module class.

Plans give per-layer and per-mapping values (SoupLM granularity), so every tensor name
must map to a layer position and a module class. Llama/Mistral/Qwen/Gemma names
(`model.layers.3.self_attn.q_proj.weight`) and GPT-2/NeoX-style names (`h.3.attn...`,
`gpt_neox.layers.3.attention...`) are understood.
"""

from __future__ import annotations

import re

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|block|layer)\.(\d+)\.")

# Module classes, first match wins; the order matters ("norm" before the projections,
# because e.g. `q_norm` is a norm, not a query projection).
_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (cls, re.compile(pattern))
    for cls, pattern in (
        ("norm", r"(norm|ln_\w+|layernorm)[^.]*\.(weight|bias)$"),
        ("embed", r"(embed_tokens|wte|wpe|embed_in|word_embeddings|embeddings)\."),
        ("lm_head", r"(lm_head|embed_out|output)\.weight$"),
        ("q", r"\.(q_proj|query|wq)\."),
        ("k", r"\.(k_proj|key|wk)\."),
        ("v", r"\.(v_proj|value|wv)\."),
        ("o", r"\.(o_proj|out_proj|dense|wo|c_proj)\."),
        ("qkv", r"\.(qkv_proj|query_key_value|c_attn|Wqkv)\."),
        ("gate", r"\.(gate_proj|w1)\."),
        ("up", r"\.(up_proj|w3|fc1|c_fc|dense_h_to_4h)\."),
        ("down", r"\.(down_proj|w2|fc2|dense_4h_to_h)\."),
    )
)

ATTENTION = frozenset({"q", "k", "v", "o", "qkv"})
MLP = frozenset({"gate", "up", "down"})

# Filter shorthands a plan may use instead of a tensor-name substring.
SHORTHANDS: dict[str, frozenset[str]] = {
    "attn": ATTENTION,
    "mlp": MLP,
    "norm": frozenset({"norm"}),
    "embed": frozenset({"embed"}),
    "lm_head": frozenset({"lm_head"}),
    **{cls: frozenset({cls}) for cls in ("q", "k", "v", "o", "qkv", "gate", "up", "down")},
}


def layer_index(name: str) -> int | None:
    """Index of the transformer block a tensor belongs to, or None (embeddings, final norm, head)."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def module_class(name: str) -> str:
    """One of q, k, v, o, qkv, gate, up, down, norm, embed, lm_head, or "other"."""
    # A mapping inside attention (`self_attn.o_proj`) vs the MLP's `dense` in NeoX naming:
    # the first matching pattern decides, which is right for the architectures above.
    for cls, pattern in _CLASSES:
        if pattern.search(name):
            return cls
    return "other"


def layer_position(name: str, n_layers: int) -> float:
    """mergekit's gradient coordinate t: layer/(n_layers−1) inside blocks, 0 elsewhere."""
    index = layer_index(name)
    if index is None:
        return 0.0
    return index / (n_layers - 1) if n_layers > 1 else 1.0
