"""The ``mlperf`` recipe section: LoadGen settings, the dataset, and how the SUT sends requests.

LoadGen settings are resolved in MLPerf's order, each layer overriding the one before:

1. benchstack's defaults (no minimum duration, the llama2-70b TTFT/TPOT limits: Server 2000/200
   ms, Interactive 450/40 ms) and the load point's ``num_requests`` (minimum query count) and
   ``duration_s`` (minimum duration);
2. MLPerf's own ``mlperf.conf`` (built into LoadGen) for ``conf_model``, when it is set
   (Interactive reads ``<conf_model>-interactive``);
3. ``user_conf`` (a ``user.conf`` file: ``model.scenario.key = value``), when it is set;
4. the keys of this section that are set (``target_qps``, ``min_duration_ms``, ...);
5. the load point's ``request_rate``: the Server/Interactive target QPS (Offline: the expected
   QPS, unless ``expected_qps`` is set).

A point's ``concurrency`` caps the requests in flight in Offline (``max_inflight`` wins).
"""

from __future__ import annotations

from typing import Any

from attrs import field, frozen, validators as v

SCENARIOS = ("Offline", "Server", "Interactive")
MODES = ("PerformanceOnly", "AccuracyOnly")
DATASET_FORMATS = ("auto", "pickle", "json", "jsonl")
DISTRIBUTIONS = ("fixed", "uniform", "normal")

_opt_pos = v.optional(v.gt(0))


@frozen(kw_only=True)
class MlperfOptions:
    """Recipe section ``mlperf``."""

    # --- scenario and mode
    scenario: str = field(default="Server", validator=v.in_(SCENARIOS))  # for points without one
    mode: str = field(default="PerformanceOnly", validator=v.in_(MODES))

    # --- LoadGen settings (None: from the layers above, see the module docstring)
    target_qps: float | None = field(default=None, validator=_opt_pos)  # Server/Interactive
    expected_qps: float | None = field(default=None, validator=_opt_pos)  # Offline
    min_duration_ms: int | None = field(default=None, validator=v.optional(v.ge(0)))
    min_query_count: int | None = field(default=None, validator=v.optional(v.ge(1)))
    max_query_count: int | None = field(default=None, validator=v.optional(v.ge(0)))
    ttft_latency_ms: float | None = field(default=None, validator=_opt_pos)  # Server limit
    tpot_latency_ms: float | None = field(default=None, validator=_opt_pos)
    interactive_ttft_latency_ms: float | None = field(default=None, validator=_opt_pos)
    interactive_tpot_latency_ms: float | None = field(default=None, validator=_opt_pos)
    conf_model: str | None = None  # e.g. "llama2-70b": load MLPerf's mlperf.conf entries for it
    user_conf: str | None = None  # path of a user.conf
    performance_sample_count: int | None = field(default=None, validator=v.optional(v.ge(1)))
    seed: int | None = None  # LoadGen's qsl/sample/schedule seeds (None: LoadGen's or the conf's)

    # --- the query sample library
    dataset: str | None = None  # pickle / JSON / JSONL of prompts or token ids; None: synthetic
    dataset_format: str = field(default="auto", validator=v.in_(DATASET_FORMATS))
    input_key: str | None = None  # text column (default: input, prompt, text, question)
    tokens_key: str | None = None  # token-id column (default: tok_input, input_ids, input_tokens)
    output_len_key: str | None = None  # per-sample max_tokens column (default: use the point's OSL)
    max_samples: int | None = field(default=None, validator=v.optional(v.ge(1)))
    synthetic_samples: int = field(default=256, validator=v.ge(1))
    isl_distribution: str = field(default="fixed", validator=v.in_(DISTRIBUTIONS))
    isl_spread: float = field(default=0.0, validator=[v.ge(0), v.le(1)])  # uniform ±, normal std (fraction)
    osl_distribution: str = field(default="fixed", validator=v.in_(DISTRIBUTIONS))
    osl_spread: float = field(default=0.0, validator=[v.ge(0), v.le(1)])
    dataset_seed: int = 0
    tokenizer: str | None = None  # tokenizer.json or its directory (default: the model's, if local)

    # --- the SUT (benchstack's streaming client)
    endpoint_type: str = field(default="chat", validator=v.in_(("chat", "completions")))
    streaming: bool = True
    endpoint_policy: str = field(default="round_robin",
                                 validator=v.in_(("round_robin", "least_outstanding")))
    max_inflight: int | None = field(default=None, validator=v.optional(v.ge(1)))  # Offline cap
    ignore_eos: bool = False
    extra_body: dict[str, Any] = field(factory=dict)
    request_timeout_s: float = field(default=3600.0, validator=v.gt(0))
    response_data: str = field(default="text", validator=v.in_(("text", "token_ids")))
    # Server/Interactive: wake the SUT's loop this often (0: never), so that LoadGen's issue does
    # not meet a cold CPU (an idle vCPU runs the next few hundred microseconds much slower)
    sut_tick_ms: float = field(default=1.0, validator=v.ge(0))

