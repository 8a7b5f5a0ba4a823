"""Scoring a dataset with a trained model, prediction files, evaluation reports and ONNX export."""

from .scoring import ScoringOutput, score_dataset

__all__ = ["ScoringOutput", "score_dataset"]
