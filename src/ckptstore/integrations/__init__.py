"""One-line drop-ins for the frameworks people train with.

Each module imports its framework only when used: ``ckptstore.integrations.keras`` (Keras 3),
``.lightning`` (PyTorch Lightning), ``.transformers`` (Hugging Face Trainer), ``.torch`` (RNG state
helpers for hand-written loops), and :class:`ckptstore.Checkpointer` for any plain loop.
"""
