"""The ``genai_perf`` recipe section."""

from __future__ import annotations

from attrs import field, frozen, validators as v


@frozen(kw_only=True)
class GenaiPerfOptions:
    """Recipe section ``genai_perf``."""

    executable: str | None = None  # default: `genai-perf` next to the running Python, else on PATH
    endpoint_type: str = field(default="chat", validator=v.in_(["chat", "completions"]))
    streaming: bool = True
    tokenizer: str | None = None  # default: the model's tokenizer (recipe model.tokenizer or path)
    ignore_eos: bool = True  # --extra-inputs ignore_eos:true, so engines produce exactly OSL tokens
    random_seed: int | None = 0
    timeout_s: float = field(default=1800.0, validator=v.gt(0))
    extra_args: list[str] = field(factory=list)  # appended to `genai-perf profile`
    env: dict[str, str] = field(factory=dict)  # extra environment (e.g. LD_LIBRARY_PATH for perf_analyzer)
