"""samc: Saliency-Augmented Memory Completion for continual learning (reference implementation)."""

__version__ = "0.1.0"
