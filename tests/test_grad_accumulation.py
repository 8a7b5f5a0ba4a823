"""Exact gradient accumulation: one optimizer step over micro-batches of unequal size (a last partial batch, a row
dropped by ``skip_bad_samples``, missing modalities) equals one independent full-batch step, with plain SGD.

The reference is computed by hand here (losses from logits with torch.nn.functional, L2-SP from its formula), not
through the model's loss code.
"""

import copy
import math

import pytest
import torch
from datasets import Dataset
from torch.nn import functional as F
from transformers import TrainerCallback

from multimodal_fusion import FusionDataCollator, FusionModel, FusionProcessor
from multimodal_fusion.training import FusionTrainer, FusionTrainingArguments

MODALITIES = {"a": {"kind": "features", "input_dim": 3}, "b": {"kind": "features", "input_dim": 2}}
LR = 0.5

ROWS_A = [[0.1, -0.3, 0.8], [1.2, 0.4, -0.5], [-0.7, 0.9, 0.2], [0.3, -0.2, 0.1], [0.5, 0.5, -1.1]]
# row 3 with a NaN feature value: a bad sample the collator skips (counted) in skip mode
ROWS_A_BAD = [row if i != 3 else [0.3, math.nan, 0.1] for i, row in enumerate(ROWS_A)]
ROWS_B = [[0.2, -1.0], None, [0.9, 0.3], [-0.4, 0.6], None]  # b missing in rows 1 and 4
LABELS = {
    "single_label_classification": [0, 2, 1, 1, 2],
    "multi_label_classification": [
        [1.0, 0.0, 1.0],
        [0.0, 1.0, 0.0],
        [1.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [0, 1.0, 1],
    ],
    "regression": [0.4, -1.3, 2.2, 0.7, -0.1],
}


def build_model(problem_type: str, aux: bool) -> FusionModel:
    torch.manual_seed(0)
    model = FusionModel.from_encoders(
        {name: dict(spec, hidden_sizes=[8]) for name, spec in MODALITIES.items()},
        num_labels=1 if problem_type == "regression" else 3,
        problem_type=problem_type,
        projection_dim=8,
        fusion_hidden_size=8,
        dropout=0.0,
        modality_dropout=0.0,
        aux_loss_weight=0.7 if aux else 0.0,
    )
    with torch.no_grad():  # weights far from the tiny default init, so that samples' losses differ clearly
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(std=0.4)
    return model


def reference_loss(model, rows, problem_type, l2sp_weight, reference):
    """Full-batch objective, written from the definitions: mean main loss + aux_weight x mean over modalities of
    each modality's mean loss over the samples that have it + l2sp_weight x sum ||w - w0||^2."""
    features = {
        "a_values": torch.tensor([ROWS_A[i] for i in rows]),
        "b_values": torch.tensor([ROWS_B[i] or [0.0, 0.0] for i in rows]),
        "b_mask": torch.tensor([ROWS_B[i] is not None for i in rows]),
    }
    labels = [LABELS[problem_type][i] for i in rows]
    out = model(**features)

    def mean_loss(logits, target):
        if problem_type == "single_label_classification":
            return F.cross_entropy(logits, torch.tensor(target))
        if problem_type == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, torch.tensor(target, dtype=torch.float32))
        return F.mse_loss(logits.squeeze(-1), torch.tensor(target))

    loss = mean_loss(out.logits, labels)
    if model.aux_heads is not None:
        present = {"a": [True] * len(rows), "b": features["b_mask"].tolist()}
        terms = []
        for name, keep in present.items():
            idx = [k for k, p in enumerate(keep) if p]
            terms.append(mean_loss(out.aux_logits[name][idx], [labels[k] for k in idx]))
        loss = loss + model.config.aux_loss_weight * torch.stack(terms).mean()
    for name, param in model.named_parameters():
        if name in reference:
            loss = loss + l2sp_weight * ((param - reference[name]) ** 2).sum()
    return loss


class GradientSnapshot(TrainerCallback):
    """The accumulated gradients right before the optimizer step."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.grads = {
            n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None
        }


CASES = [
    ("single_label_classification", False, False, 0.0),
    ("single_label_classification", True, True, 0.0),
    ("single_label_classification", True, True, 0.3),
    ("multi_label_classification", True, True, 0.3),
    ("regression", True, False, 0.3),
]


@pytest.mark.parametrize("problem_type, skip, aux, l2sp_weight", CASES)
def test_one_step_over_uneven_micro_batches_equals_the_full_batch_step(
    problem_type, skip, aux, l2sp_weight, tmp_path
):
    rows = [0, 1, 2, 4] if skip else [0, 1, 2, 3, 4]
    data = {"a": ROWS_A_BAD if skip else ROWS_A, "b": ROWS_B, "label": LABELS[problem_type]}
    model = build_model(problem_type, aux)
    # L2-SP needs weights away from their reference to have a gradient: a perturbed reference of every encoder weight
    generator = torch.Generator().manual_seed(1)
    l2sp_reference = {
        n: p.detach() + 0.1 * torch.randn(p.shape, generator=generator)
        for n, p in model.named_parameters()
        if n.startswith("encoders.")
    }
    expected_model = copy.deepcopy(model).train()

    processor = FusionProcessor(MODALITIES)
    collator = FusionDataCollator(
        processor, {"a": "a", "b": "b"}, label_column="label", skip_bad_samples=skip
    )
    args = FusionTrainingArguments(
        str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=3,
        max_steps=1,
        learning_rate=LR,
        optim="sgd",
        weight_decay=0.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        l2sp_weight=l2sp_weight,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    snapshot = GradientSnapshot(model)
    trainer = FusionTrainer(
        model, args, train_dataset=Dataset.from_dict(data), data_collator=collator, callbacks=[snapshot]
    )
    assert trainer.optimizer is None and args.optim == "sgd"
    if trainer.l2sp is not None:
        for name, value in l2sp_reference.items():
            trainer.l2sp.set_reference(name, value)
    trainer.train()
    assert collator.num_skipped == (1 if skip else 0)

    reference_loss(expected_model, rows, problem_type, l2sp_weight, l2sp_reference).backward()
    expected_grads = {n: p.grad for n, p in expected_model.named_parameters() if p.grad is not None}
    assert set(snapshot.grads) == set(expected_grads)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(
            snapshot.grads[name], grad, atol=1e-6, rtol=0, msg=lambda m, name=name: f"{name}: {m}"
        )
    after = dict(model.named_parameters())
    changed = 0
    for name, param in expected_model.named_parameters():
        expected = param.detach() - LR * param.grad if param.grad is not None else param.detach()
        torch.testing.assert_close(after[name].detach(), expected, atol=1e-6, rtol=0, msg=name)
        changed += int(not torch.equal(after[name].detach(), param.detach()))
    assert changed > 10  # the step moved the weights (the comparison is not between two unchanged models)
    if l2sp_weight:
        assert any(n.startswith("encoders.") and g.abs().sum() > 0 for n, g in expected_grads.items())


def test_mean_of_micro_batch_means_would_differ(tmp_path):
    """Guard that the data above can tell the two rules apart: averaging the micro-batch means of [2, 2, 1] rows is
    measurably different from the full-batch mean."""
    model = build_model("single_label_classification", aux=False).train()
    labels = torch.tensor(LABELS["single_label_classification"])
    logits = model(a_values=torch.tensor(ROWS_A)).logits
    full = F.cross_entropy(logits, labels)
    per_batch = torch.stack(
        [F.cross_entropy(logits[s], labels[s]) for s in (slice(0, 2), slice(2, 4), slice(4, 5))]
    )
    assert abs(per_batch.mean() - full) > 1e-3
