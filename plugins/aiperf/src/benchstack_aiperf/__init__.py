"""benchstack load generator: AIPerf."""
