"""benchstack backend ``vllm_nixl``: vLLM prefill/decode over the NIXL connector behind a router."""

__version__ = "0.1.0"
