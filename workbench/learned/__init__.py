"""Learned soft compressors (seed 002): a small module maps the context's input embeddings to k soft vectors that
the frozen evaluated model reads ahead of the continuation. ``config`` and ``store`` load no torch; ``architectures``,
``losses`` and ``train`` do."""
