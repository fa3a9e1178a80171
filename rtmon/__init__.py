"""rtmon: a real-time object-detection monitor that measures a plain YOLO baseline against optimized engines."""

__version__ = "0.1.0"
