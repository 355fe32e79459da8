"""Taylor-protected releases of transformers checkpoints (TaylorMLP, Wang et al., EMNLP 2024)."""
