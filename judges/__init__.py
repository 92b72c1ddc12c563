"""LLM judges: rubrics, pairwise prompts, verdict parsing, win-tie rates (a later issue)."""
