"""The query sample library: MLPerf dataset formats and synthetic ISL/OSL distributions."""

from __future__ import annotations

import json
import pickle
import random

import pytest

from benchstack.errors import LoadError

from benchstack_mlperf import qsl

SAMPLES = [{"input": "hello there", "tok_input": [11, 12, 13], "tok_output_len": 7},
           {"input": "a b c d", "tok_input": [21, 22], "tok_output_len": 3}]


@pytest.mark.parametrize("fmt", ["pickle-records", "pickle-columns", "pickle-frame", "json", "json-wrapped", "jsonl"])
def test_dataset_formats(tmp_path, fmt):
    if fmt.startswith("pickle"):
        path = tmp_path / "ds.pkl"
        data = SAMPLES
        if fmt == "pickle-columns":
            data = {k: [s[k] for s in SAMPLES] for k in SAMPLES[0]}
        if fmt == "pickle-frame":
            pd = pytest.importorskip("pandas")
            data = pd.DataFrame(SAMPLES)  # MLPerf's preprocessed llama datasets are DataFrames
        path.write_bytes(pickle.dumps(data))
    elif fmt == "jsonl":
        path = tmp_path / "ds.jsonl"
        path.write_text("\n".join(json.dumps(s) for s in SAMPLES) + "\n")
    else:
        path = tmp_path / "ds.json"
        path.write_text(json.dumps({"data": SAMPLES} if fmt == "json-wrapped" else SAMPLES))
    records = qsl.read_records(path)
    chat = qsl.dataset_prompts(records, osl=64, api="chat")
    assert [p.text for p in chat] == ["hello there", "a b c d"]
    assert [p.input_tokens for p in chat] == [3, 2] and {p.max_tokens for p in chat} == {64}
    comp = qsl.dataset_prompts(records, osl=64, api="completions", output_len_key="tok_output_len")
    assert [p.token_ids for p in comp] == [(11, 12, 13), (21, 22)]
    assert [p.max_tokens for p in comp] == [7, 3]


def test_dataset_keys_and_errors(tmp_path):
    path = tmp_path / "ds.jsonl"
    path.write_text('{"q": "x y", "ids": [1]}\n{"q": "z", "ids": [2, 3]}\n')
    prompts = qsl.dataset_prompts(qsl.read_records(path), osl=8, api="chat", input_key="q", max_samples=1)
    assert [p.text for p in prompts] == ["x y"]
    with pytest.raises(LoadError, match="neither text"):
        qsl.dataset_prompts(qsl.read_records(path), osl=8, api="chat")
    with pytest.raises(LoadError, match="needs a tokenizer"):
        qsl.dataset_prompts(qsl.read_records(path), osl=8, api="chat", tokens_key="ids")
    (tmp_path / "ds.txt").write_text("x")
    with pytest.raises(LoadError, match="dataset_format"):
        qsl.read_records(tmp_path / "ds.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LoadError, match="cannot be read as json"):
        qsl.read_records(tmp_path / "bad.json")
    with pytest.raises(LoadError, match="does not exist"):
        qsl.read_records(tmp_path / "missing.pkl")


def test_synthetic_lengths():
    fixed = qsl.synthetic_prompts(10, 32, 16)
    assert {len(p.text.split()) for p in fixed} == {32} and {p.max_tokens for p in fixed} == {16}
    assert {p.input_tokens for p in fixed} == {32}
    uni = qsl.synthetic_prompts(400, 100, 50, isl_distribution="uniform", isl_spread=0.2,
                                osl_distribution="normal", osl_spread=0.1, seed=3)
    isls = [len(p.text.split()) for p in uni]
    osls = [p.max_tokens for p in uni]
    assert min(isls) >= 80 and max(isls) <= 120 and 95 < sum(isls) / len(isls) < 105
    assert 48 < sum(osls) / len(osls) < 52 and len(set(osls)) > 5
    assert qsl.synthetic_prompts(5, 8, 8, seed=1) == qsl.synthetic_prompts(5, 8, 8, seed=1)


def test_sample_lengths_never_below_one():
    rng = random.Random(0)
    assert min(qsl.sample_lengths(1000, 2, "normal", 1.0, rng)) >= 1


def test_synthetic_with_a_tokenizer_is_token_exact(tmp_path):
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = ["the quick brown fox jumps over the lazy dog and runs away from here"] * 50
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    loaded = qsl.load_tokenizer(tmp_path)
    prompts = qsl.synthetic_prompts(5, 40, 8, tokenizer=loaded, seed=2)
    for p in prompts:
        assert len(loaded.encode(p.text, add_special_tokens=False).ids) == 40
    ids = qsl.synthetic_prompts(3, 12, 8, tokenizer=loaded, token_ids=True)
    assert all(len(p.token_ids) == 12 for p in ids)
    with pytest.raises(LoadError, match="no tokenizer"):
        qsl.load_tokenizer(tmp_path / "nope")
