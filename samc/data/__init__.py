"""Data: sources (embedded shapes, ImageFolder trees, torchvision CIFAR) and class-split tasks."""
from samc.data.sources import (
    SOURCES,
    ArrayDataset,
    DataError,
    is_imagefolder,
    load_imagefolder,
    load_source,
    load_torchvision,
)
from samc.data.shapes import SHAPE_CLASSES, load_shapes, make_shapes
from samc.data.splits import CLASS_ORDERS, Task, class_sequence, split_tasks

__all__ = [
    "SOURCES", "SHAPE_CLASSES", "CLASS_ORDERS",
    "ArrayDataset", "Task", "DataError",
    "load_source", "load_imagefolder", "load_torchvision", "is_imagefolder",
    "make_shapes", "load_shapes",
    "split_tasks", "class_sequence",
]
