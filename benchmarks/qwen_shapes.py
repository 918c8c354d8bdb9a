"""The shapes of the hub models the GPU benchmarks build at random or plan for: the fields of
their `config.json` (Qwen/Qwen2.5-*-Instruct), and a toy shape for dry runs on a CPU."""

QWEN_SHAPES = {
    "qwen2.5-1.5b": {"num_hidden_layers": 28, "hidden_size": 1536, "intermediate_size": 8960,
                     "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                     "tie_word_embeddings": True},
    "qwen2.5-7b": {"num_hidden_layers": 28, "hidden_size": 3584, "intermediate_size": 18944,
                   "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                   "tie_word_embeddings": False},
    "qwen2.5-32b": {"num_hidden_layers": 64, "hidden_size": 5120, "intermediate_size": 27648,
                    "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064,
                    "tie_word_embeddings": False},
    "toy": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 49152,
            "tie_word_embeddings": True},
}  # fmt: skip
