"""The query sample library: MLPerf's preprocessed datasets, or synthetic prompts with ISL/OSL spreads.

Datasets are what MLPerf's LLM benchmarks ship: a pickle (a pandas DataFrame, a list of dicts or
a dict of columns), JSON (a list of objects, or an object with one list) or JSONL. A sample has
text (``input``, ``prompt``, ``text``, ``question``) or token ids (``tok_input``, ``input_ids``,
``input_tokens``); the chat API needs text, so token ids are decoded with the tokenizer there.
"""

from __future__ import annotations

import json
import pickle
import random
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from benchstack.client import Prompt
from benchstack.errors import LoadError

TEXT_KEYS = ("input", "prompt", "text", "question")
TOKEN_KEYS = ("tok_input", "input_ids", "input_tokens", "token_ids")
#: one-token English words (with a leading space) for synthetic prompts without a tokenizer
WORDS = ("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be",
         "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but",
         "have", "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her")


# --------------------------------------------------------------------------- tokenizer


def load_tokenizer(path: str | Path | None):
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json`` or its directory; None if ``path`` is None."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise LoadError(f"no tokenizer at {path} (expected tokenizer.json or its directory)")
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - tokenizers comes with the tokenizer extra
        raise LoadError("the 'tokenizers' package is needed for a tokenizer "
                        "(pip install 'benchstack-mlperf[tokenizer]')") from None
    return Tokenizer.from_file(str(p))


def single_token_words(tokenizer, limit: int = 512) -> list[str]:
    """Words (with their leading space) that are one token each and stay so when concatenated."""
    vocab = tokenizer.get_vocab()
    words = []
    for tok in sorted(vocab, key=vocab.get):
        if tok.startswith("Ġ") and re.fullmatch(r"Ġ[a-z]{2,8}", tok):
            word = " " + tok[1:]
            if len(tokenizer.encode(word, add_special_tokens=False).ids) == 1:
                words.append(word)
        if len(words) >= limit:
            break
    if len(words) < 8:
        raise LoadError("the tokenizer has too few single-token words for synthetic prompts")
    return words


# --------------------------------------------------------------------------- datasets


def read_records(path: str | Path, fmt: str = "auto") -> list[dict[str, Any]]:
    """The samples of a dataset file as a list of dicts (pickle, JSON or JSONL)."""
    p = Path(path)
    if not p.is_file():
        raise LoadError(f"dataset {p} does not exist")
    if fmt == "auto":
        fmt = {".pkl": "pickle", ".pickle": "pickle", ".jsonl": "jsonl", ".json": "json"}.get(
            p.suffix.lower(), "")
        if not fmt:
            raise LoadError(f"dataset {p}: cannot tell the format from the suffix; "
                            "set mlperf.dataset_format (pickle, json, jsonl)")
    try:
        if fmt == "pickle":
            with open(p, "rb") as fh:
                data = pickle.load(fh)  # noqa: S301 - the user's own dataset file
        elif fmt == "jsonl":
            data = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        else:
            data = json.loads(p.read_text())
    except Exception as exc:
        raise LoadError(f"dataset {p} cannot be read as {fmt}: {type(exc).__name__}: {exc}") from None
    return _as_records(data, p)


def _as_records(data: Any, path: Path) -> list[dict[str, Any]]:
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a pandas DataFrame
        return data.to_dict(orient="records")
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1 and all(isinstance(x, dict) for x in lists[0]):
            return lists[0]  # {"data": [ {...}, ... ]}
        if lists and all(isinstance(v, (list, tuple)) for v in data.values()):
            n = len(next(iter(data.values())))
            return [{k: data[k][i] for k in data} for i in range(n)]  # columns
    if isinstance(data, list):
        if all(isinstance(x, dict) for x in data):
            return data
        if all(isinstance(x, str) for x in data):
            return [{"input": x} for x in data]
    raise LoadError(f"dataset {path}: expected samples (a list of objects, columns, or a "
                    f"DataFrame), got {type(data).__name__}")


def _pick(record: dict[str, Any], key: str | None, defaults: Sequence[str]) -> Any:
    if key is not None:
        return record.get(key)
    for k in defaults:
        if record.get(k) is not None:
            return record[k]
    return None


def dataset_prompts(records: Iterable[dict[str, Any]], *, osl: int, api: str, tokenizer=None,
                    input_key: str | None = None, tokens_key: str | None = None,
                    output_len_key: str | None = None, max_samples: int | None = None) -> list[Prompt]:
    """Prompts from dataset records; max_tokens is the point's OSL unless ``output_len_key``."""
    prompts: list[Prompt] = []
    for i, rec in enumerate(records):
        if max_samples is not None and i >= max_samples:
            break
        ids = _pick(rec, tokens_key, TOKEN_KEYS)
        text = _pick(rec, input_key, TEXT_KEYS)
        max_tokens = osl
        if output_len_key is not None:
            if rec.get(output_len_key) is None:
                raise LoadError(f"dataset sample {i} has no {output_len_key!r}")
            max_tokens = max(1, int(rec[output_len_key]))
        if ids is not None:
            ids = [int(t) for t in ids]
        if api == "completions" and ids is not None:
            prompts.append(Prompt(token_ids=ids, max_tokens=max_tokens, input_tokens=len(ids)))
        elif text is not None:
            n = len(ids) if ids is not None else (
                len(tokenizer.encode(str(text), add_special_tokens=False).ids) if tokenizer else None)
            prompts.append(Prompt(text=str(text), max_tokens=max_tokens, input_tokens=n))
        elif ids is not None:
            if tokenizer is None:
                raise LoadError("the dataset has token ids only: the chat API needs a tokenizer "
                                "to decode them (set mlperf.tokenizer) or use endpoint_type: completions")
            prompts.append(Prompt(text=tokenizer.decode(ids), max_tokens=max_tokens,
                                  input_tokens=len(ids)))
        else:
            raise LoadError(f"dataset sample {i} has neither text ({', '.join(TEXT_KEYS)}) nor "
                            f"token ids ({', '.join(TOKEN_KEYS)}); set mlperf.input_key or tokens_key")
    if not prompts:
        raise LoadError("the dataset has no samples")
    return prompts


# --------------------------------------------------------------------------- synthetic


def sample_lengths(count: int, mean: int, distribution: str, spread: float,
                   rng: random.Random) -> list[int]:
    """``count`` lengths around ``mean``: fixed, uniform (mean ± spread*mean) or normal (std spread*mean)."""
    if distribution == "fixed" or spread == 0:
        return [mean] * count
    if distribution == "uniform":
        lo, hi = max(1, round(mean * (1 - spread))), max(1, round(mean * (1 + spread)))
        return [rng.randint(lo, hi) for _ in range(count)]
    if distribution == "normal":
        return [max(1, round(rng.gauss(mean, spread * mean))) for _ in range(count)]
    raise ValueError(f"unknown distribution {distribution!r}")


def synthetic_prompts(count: int, isl: int, osl: int, *, isl_distribution: str = "fixed",
                      isl_spread: float = 0.0, osl_distribution: str = "fixed",
                      osl_spread: float = 0.0, seed: int = 0, tokenizer=None,
                      token_ids: bool = False) -> list[Prompt]:
    """Random prompts of the asked input lengths and max_tokens.

    Without a tokenizer a prompt is ``isl`` common English words; with one, ``isl`` words that
    are one token each (so the prompt is ``isl`` tokens), or the token ids themselves with
    ``token_ids`` (completions API).
    """
    rng = random.Random(seed)
    isls = sample_lengths(count, isl, isl_distribution, isl_spread, rng)
    osls = sample_lengths(count, osl, osl_distribution, osl_spread, rng)
    if tokenizer is not None:
        words = single_token_words(tokenizer)
        ids = {w: tokenizer.encode(w, add_special_tokens=False).ids[0] for w in words}
    else:
        words = [" " + w for w in WORDS]
    out = []
    for n_in, n_out in zip(isls, osls):
        chosen = [rng.choice(words) for _ in range(n_in)]
        if token_ids and tokenizer is not None:
            out.append(Prompt(token_ids=[ids[w] for w in chosen], max_tokens=n_out, input_tokens=n_in))
        else:
            text = "".join(chosen)  # with a tokenizer the leading space keeps the first word one token
            out.append(Prompt(text=text if tokenizer is not None else text.lstrip(), max_tokens=n_out,
                              input_tokens=n_in))
    return out
