"""Model Stock (Jang et al. 2024, arXiv:2403.19522), with mergekit 0.1.5 semantics.

With N ≥ 2 fine-tuned models θ_i of one base θ_0 and offsets δ_i = θ_i − θ_0, the average
angle between the offsets decides how far to move from the base toward their centroid:

    cos θ = mean_{i<j} ⟨δ_i, δ_j⟩ / max(‖δ_i‖‖δ_j‖, 1e-6)      (each term clamped to [−1, 1])
    t     = N cos θ / (1 + (N − 1) cos θ)                     (t = 0 where |1 + (N−1) cos θ| < 1e-6)
    θ     = t · (Σ_i θ_i / N) + (1 − t) · θ_0  =  θ_0 + t · Σ_i δ_i / N

The whole tensor is one vector (filter_wise: false, the default); filter_wise: true computes
one t per slice along the last dimension (per row of a weight matrix; a 1-D tensor is one row).
"""

from collections.abc import Sequence

import torch

from merging.registry import register


def model_stock(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    filter_wise: bool = False,
) -> torch.Tensor:
    """The formula above; the second form (base + t · mean offset) saves two full-size passes.

    The ratio t is the paper's closed form for the point on the base→centroid segment nearest
    the (unknown) centre of the fine-tuned weights' distribution, assuming they lie on a
    sphere around it with equal pairwise angles; the angle is estimated from the models given.
    At the singular denominator (offsets pointing apart at cos θ = −1/(N−1)) there is no finite
    estimate, so the base is kept, as mergekit does.
    """
    if len(tensors) < 2:
        raise ValueError(f"model_stock: needs at least 2 models besides the base, got {len(tensors)}")
    shape = base.shape
    if filter_wise and base.dim() >= 1:
        rows = base.reshape(-1, shape[-1])
    else:
        rows = base.reshape(1, -1)
    offsets = [t.reshape(rows.shape) - rows for t in tensors]
    norms = [torch.linalg.vector_norm(d, dim=-1) for d in offsets]
    cosines = []
    for a in range(len(offsets)):
        for b in range(a + 1, len(offsets)):
            dot = torch.linalg.vecdot(offsets[a], offsets[b], dim=-1)
            cosines.append((dot / (norms[a] * norms[b]).clamp(min=1e-6)).clamp(-1.0, 1.0))
    cos = torch.stack(cosines).mean(dim=0)
    n = len(offsets)
    denominator = 1 + (n - 1) * cos
    singular = denominator.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos),
                    n * cos / torch.where(singular, torch.ones_like(denominator), denominator))
    mean_offset = torch.zeros_like(rows)
    for d in offsets:
        mean_offset.add_(d)
    mean_offset.div_(n)
    return mean_offset.mul_(t.unsqueeze(-1)).add_(rows).reshape(shape)


register(model_stock, "model_stock", family="geometric", min_models=2)
