"""Text classification: one label per document. The model reads token ids (B, T) and returns class logits
(B, C), so everything (loss, accuracy, priors, paired tests) is classification's; only the name differs, which
is what tells the data layer to keep labels per document and pad each one to data.block_size."""
from __future__ import annotations

from recipe.tasks.classification import Classification
from recipe.tasks.registry import register


@register
class TextClassification(Classification):
    name = "text-classification"
