"""Generation backends (vLLM, transformers) that take merged weights without restarting (a later issue)."""
