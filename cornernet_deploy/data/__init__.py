"""Synthetic data for tests and the demo (torch-free)."""
from .shapes import (ALL_SHAPE_CLASSES, SHAPE_CLASSES, generate_shapes_dataset, render_scene,
                     scene_to_coco)

__all__ = ["ALL_SHAPE_CLASSES", "SHAPE_CLASSES", "generate_shapes_dataset", "render_scene",
           "scene_to_coco"]
