"""benchstack backend: trtllm-serve."""
