"""Field kinds, one module per family; each kind implements the protocol of ``base``."""
