"""Face detectors (MTCNN in Flax)."""
