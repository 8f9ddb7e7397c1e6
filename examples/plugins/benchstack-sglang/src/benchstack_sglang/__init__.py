"""benchstack backend ``sglang``: SGLang servers behind the SGLang router (a third-party plugin)."""
