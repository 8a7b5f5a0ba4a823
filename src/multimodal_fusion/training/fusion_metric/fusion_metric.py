"""Classification and regression metrics as an `evaluate` module that ships with the package (works offline).

Configs: ``single_label_classification`` (accuracy, macro-F1, per-class F1), ``multi_label_classification``
(micro/macro-F1, subset accuracy) and ``regression`` (MSE, MAE, R^2).
"""

import datasets
import evaluate
import numpy as np

_FEATURES = {
    "single_label_classification": {
        "predictions": datasets.Value("int64"),
        "references": datasets.Value("int64"),
    },
    "multi_label_classification": {
        "predictions": datasets.Sequence(datasets.Value("int64")),
        "references": datasets.Sequence(datasets.Value("int64")),
    },
    "regression": {
        "predictions": datasets.Sequence(datasets.Value("float64")),
        "references": datasets.Sequence(datasets.Value("float64")),
    },
}


def _f1(true_positive, false_positive, false_negative):
    denominator = 2 * true_positive + false_positive + false_negative
    return np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 0.0)


class FusionMetric(evaluate.Metric):
    def _info(self):
        config = self.config_name if self.config_name in _FEATURES else "single_label_classification"
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions and references: class ids, multi-hot rows, or float targets",
            features=datasets.Features(_FEATURES[config]),
        )

    def _compute(self, predictions, references, label_names=None):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if self.config_name == "regression":
            predictions, references = (
                predictions.reshape(len(references), -1),
                references.reshape(len(references), -1),
            )
            error = predictions - references
            total = ((references - references.mean(axis=0)) ** 2).sum()
            return {
                "mse": float((error**2).mean()),
                "mae": float(np.abs(error).mean()),
                "r2": float(1 - (error**2).sum() / total) if total > 0 else 0.0,
            }
        if self.config_name == "multi_label_classification":
            tp = (predictions * references).sum(axis=0)
            fp = (predictions * (1 - references)).sum(axis=0)
            fn = ((1 - predictions) * references).sum(axis=0)
            return {
                "micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())),
                "macro_f1": float(_f1(tp, fp, fn).mean()),
                "subset_accuracy": float((predictions == references).all(axis=1).mean()),
            }
        classes = np.arange(max(int(predictions.max(initial=0)), int(references.max(initial=0))) + 1)
        if label_names is not None:
            classes = np.arange(max(len(label_names), len(classes)))
        tp = np.array([((predictions == c) & (references == c)).sum() for c in classes])
        fp = np.array([((predictions == c) & (references != c)).sum() for c in classes])
        fn = np.array([((predictions != c) & (references == c)).sum() for c in classes])
        per_class = _f1(tp, fp, fn)
        present = (tp + fn) > 0
        names = label_names or [str(c) for c in classes]
        result = {
            "accuracy": float((predictions == references).mean()),
            "macro_f1": float(per_class[present].mean()) if present.any() else 0.0,
        }
        result.update({f"f1_{names[c]}": float(per_class[c]) for c in classes if c < len(names)})
        return result
