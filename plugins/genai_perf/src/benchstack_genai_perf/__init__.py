"""benchstack's ``genai_perf`` load generator: NVIDIA genai-perf (perf_analyzer) per load point."""

__version__ = "0.1.0"
