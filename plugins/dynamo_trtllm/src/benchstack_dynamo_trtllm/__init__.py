"""benchstack backend: Dynamo frontend + TensorRT-LLM workers."""
