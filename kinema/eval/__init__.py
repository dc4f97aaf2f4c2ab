"""Evaluation of generations on the synthetic world (detector, metrics, Fréchet distance, report)."""
from kinema.eval.detector import Detection, detect_frame, detect_frames, track_objects
from kinema.eval.metrics import evaluate_clip, parse_caption

__all__ = ["Detection", "detect_frame", "detect_frames", "track_objects", "evaluate_clip", "parse_caption"]
