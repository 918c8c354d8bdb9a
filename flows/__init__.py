"""Prefect flows: wiring only (full_pipeline as flow "rlt", ablation, reward_rank, ...)."""
