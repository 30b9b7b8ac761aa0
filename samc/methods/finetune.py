"""finetune: the model is trained on each task in turn with no memory and no regulariser."""
from samc.methods.base import Method


class Finetune(Method):
    name = "finetune"
