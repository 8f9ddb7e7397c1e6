"""A tiny HuggingFace-style Llama model, built offline and deterministically.

``make_tiny_model(path)`` writes a ``LlamaForCausalLM`` directory that serving stacks and load
generators can load without a model hub:

- a byte-level BPE tokenizer trained on this Python's standard-library sources
  (``tokenizer.json``, ``tokenizer_config.json`` with a Llama-3-style ``chat_template``,
  ``special_tokens_map.json``);
- ``config.json`` (hidden 256, 4 heads, 2 KV heads, head_dim 64, 2 layers, float32),
  ``generation_config.json``;
- random weights in ``model.safetensors`` (about 13 MB) with the Llama tensor names.

The vocabulary is >= 4096 on purpose: the Dynamo mocker samples token ids around 1000-2000, and
with a smaller vocabulary every streamed chunk decodes to empty text. Head size 64 because
vLLM's CPU attention rejects small head sizes.

A finished directory holds the marker file ``.tinymodel-complete``; calling again with the same
arguments returns at once. Uses only the standard library, numpy, tokenizers and safetensors.

CLI: ``python -m benchstack.tinymodel DIR [--name NAME] [--vocab-size N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

__all__ = ["make_tiny_model", "MARKER", "SPECIAL_TOKENS"]

MARKER = ".tinymodel-complete"
FORMAT_VERSION = 1

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
EOT = "<|eot_id|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [BOS, EOS, "<|start_header_id|>", "<|end_header_id|>", EOT, PAD]

HIDDEN = 256
INTERMEDIATE = 512
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 64
MAX_POS = 2048

# Llama-3 style; accepts string content or OpenAI content parts ([{type: text, text: ...}]).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# Training text: the standard library's top-level modules, in name order, up to this many bytes.
_CORPUS_BYTES = 2_000_000


def _corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    total = 0
    for f in sorted(stdlib.glob("*.py")):
        try:
            t = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        texts.append(t)
        total += len(t)
        if total >= _CORPUS_BYTES:
            break
    if total < 200_000:  # a stripped Python: fall back to a generated, still deterministic text
        words = [f"w{i:x}{chr(97 + i % 26)}" for i in range(20000)]
        texts.append(" ".join(words) * 4)
    return texts


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok


def _weights(vocab: int, seed: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> Any:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)).astype(np.float32)

    ones = lambda n: np.ones((n,), dtype=np.float32)  # noqa: E731
    w: dict[str, Any] = {"model.embed_tokens.weight": rand(vocab, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = ones(HIDDEN)
        w[p + "self_attn.q_proj.weight"] = rand(HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.k_proj.weight"] = rand(KV_HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.v_proj.weight"] = rand(KV_HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.o_proj.weight"] = rand(HIDDEN, HEADS * HEAD_DIM)
        w[p + "post_attention_layernorm.weight"] = ones(HIDDEN)
        w[p + "mlp.gate_proj.weight"] = rand(INTERMEDIATE, HIDDEN)
        w[p + "mlp.up_proj.weight"] = rand(INTERMEDIATE, HIDDEN)
        w[p + "mlp.down_proj.weight"] = rand(HIDDEN, INTERMEDIATE)
    w["model.norm.weight"] = ones(HIDDEN)
    w["lm_head.weight"] = rand(vocab, HIDDEN)
    return w


def _write(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def make_tiny_model(
    path: Path, *, name: str = "tiny-llama", vocab_size: int = 4096, seed: int = 0
) -> Path:
    """Build (or reuse) a tiny random LlamaForCausalLM directory at ``path``; return ``path``."""
    path = Path(path)
    if vocab_size < 4096:
        raise ValueError("vocab_size must be >= 4096 (the Dynamo mocker samples ids up to ~2000)")
    params = {"format": FORMAT_VERSION, "name": name, "vocab_size": vocab_size, "seed": seed}
    marker = path / MARKER
    try:
        if json.loads(marker.read_text()) == params:
            return path
    except (OSError, ValueError):
        pass

    path.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)

    tok = _train_tokenizer(vocab_size)
    vocab = max(vocab_size, tok.get_vocab_size())
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    _write(path / "tokenizer.json", tok.to_str())

    special_map = {"bos_token": BOS, "eos_token": EOT, "pad_token": PAD}
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "name_or_path": name,
        "bos_token": BOS,
        "eos_token": EOT,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POS,
        "model_input_names": ["input_ids", "attention_mask"],
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(ids[t]): {
                "content": t, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False, "special": True,
            }
            for t in SPECIAL_TOKENS
        },
    }
    _write(path / "tokenizer_config.json", _json(tok_config))
    _write(path / "special_tokens_map.json", _json(special_map))

    config = {
        "_name_or_path": name,
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids[BOS],
        "eos_token_id": [ids[EOS], ids[EOT]],
        "pad_token_id": ids[PAD],
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POS,
        "mlp_bias": False,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab,
    }
    _write(path / "config.json", _json(config))
    gen = {
        "bos_token_id": ids[BOS],
        "eos_token_id": [ids[EOS], ids[EOT]],
        "pad_token_id": ids[PAD],
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.9,
        "max_length": MAX_POS,
    }
    _write(path / "generation_config.json", _json(gen))

    from safetensors.numpy import save

    _write(path / "model.safetensors", save(_weights(vocab, seed), metadata={"format": "pt"}))
    _write(marker, json.dumps(params, sort_keys=True))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchstack.tinymodel",
        description="Build a tiny random Llama model directory (offline, deterministic).",
    )
    ap.add_argument("dir", type=Path)
    ap.add_argument("--name", default="tiny-llama")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(make_tiny_model(a.dir, name=a.name, vocab_size=a.vocab_size, seed=a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
