"""Frozen-encoder embedding cache: cached == live (logits, training trajectory, per-sample batch invariance),
fingerprints, cache reuse without encoder forwards, what gets cached, bad samples, run.py integration."""

import copy
import logging

import pytest
import torch
from test_training_run import write_config
from tiny_data import write_tiny_dataset

from multimodal_fusion import (
    BadSampleError,
    FusionDataCollator,
    FusionModel,
    FusionProcessor,
    load_fusion_dataset,
)
from multimodal_fusion.cache.embedding_cache import cache_embeddings, embedding_fingerprint
from multimodal_fusion.inference.scoring import score_dataset
from multimodal_fusion.training import FusionTrainer, FusionTrainingArguments
from multimodal_fusion.training.embedding_cache_policy import (
    apply_embedding_cache,
    cacheable_modalities,
    embedding_cache_plan,
)
from multimodal_fusion.training.run_fusion import main

COLUMNS = {"image": "image", "audio": "audio", "text": "text"}
SMALL = {"projection_dim": 16, "fusion_hidden_size": 16, "num_labels": 3}


def encoders(tiny_dir, audio="wav2vec2", specs=None):
    paths = {"image": str(tiny_dir / "vit"), "audio": str(tiny_dir / audio), "text": str(tiny_dir / "bert")}
    return {name: {"path": path, **(specs or {}).get(name, {})} for name, path in paths.items()}


def build(tiny_dir, audio="wav2vec2", trainable_layers=0, seed=0, specs=None, **kwargs):
    torch.manual_seed(seed)
    return FusionModel.from_encoders(
        encoders(tiny_dir, audio, specs),
        trainable_layers=trainable_layers,
        fusion="gated",
        **{**SMALL, **kwargs},
    )


def load(files, processor):
    return load_fusion_dataset({k: str(v) for k, v in files.items()}, COLUMNS, kinds=processor)


class ForwardCounter:
    """Counts forward calls of each encoder of a model (forward hooks)."""

    def __init__(self, model):
        self.calls = dict.fromkeys(model.encoders, 0)
        for name, encoder in model.encoders.items():
            encoder.register_forward_hook(
                lambda *_, name=name: self.calls.__setitem__(name, self.calls[name] + 1)
            )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny files (every 4th text missing), file-backed splits, and processors for both wav2vec2 variants."""
    root = tmp_path_factory.mktemp("cache_data")
    return write_tiny_dataset(root, n_train=16, n_eval=6, missing_every=4)


def processor_for(tiny_dir, audio="wav2vec2"):
    return FusionProcessor.from_encoders(encoders(tiny_dir, audio))


def rows_of(dataset):
    return list(dataset)


@pytest.mark.parametrize("audio", ["wav2vec2", "wav2vec2_group"])
def test_cached_and_live_logits_match_and_each_embedding_is_batch_invariant(tiny_dir, data, audio):
    processor = processor_for(tiny_dir, audio)
    model = build(tiny_dir, audio).eval()
    loaded = load(data, processor)
    cached = cache_embeddings(loaded.dataset["train"], model, processor, loaded.columns, batch_size=5)
    assert {"image_embeds", "audio_embeds", "text_embeds"} <= set(cached.column_names)
    rows = rows_of(cached)
    cached_batch = FusionDataCollator(processor, loaded.columns)(rows)
    live_batch = FusionDataCollator(processor, loaded.columns, embeds_columns={})(rows)
    assert "image_pixel_values" not in cached_batch and "image_pixel_values" in live_batch
    # Missing texts stay missing: no vector, mask False, exactly where the live batch says so.
    assert [r["text_embeds"] is None for r in rows] == [r["text"] is None for r in rows]
    assert torch.equal(cached_batch["text_mask"], live_batch["text_mask"])
    assert not cached_batch["text_mask"].all()
    with torch.no_grad():
        live = model(**live_batch).logits
        from_cache = model(**cached_batch).logits
    assert (live - from_cache).abs().max().item() <= 1e-5
    # Batch invariance: every cached vector equals the live vector of that sample encoded on its own.
    collator = FusionDataCollator(processor, loaded.columns, embeds_columns={}, label_column=None)
    worst = 0.0
    for row in rows:
        with torch.no_grad():
            alone = model.get_modality_embeddings(**collator([row]))
        for name in ("image", "audio", "text"):
            if row[f"{name}_embeds"] is not None:
                diff = (alone[name][0] - torch.tensor(row[f"{name}_embeds"])).abs().max().item()
                worst = max(worst, diff)
    assert worst <= 1e-5
    if audio == "wav2vec2_group":
        # What the unpadded encoding avoids: a group-norm feature encoder sees the padding of a padded batch.
        batch = live_batch
        values, mask = batch["audio_input_values"], batch["audio_attention_mask"]
        short = int(mask.sum(dim=1).argmin())
        encoder = model.encoders["audio"]
        with torch.no_grad():
            padded = encoder(values[short : short + 1]).last_hidden_state
            frames = encoder._get_feature_vector_attention_mask(
                padded.shape[1], mask[short : short + 1]
            ).bool()
            padded_pooled = model.poolers["audio"](padded, frames)
        drift = (padded_pooled[0] - torch.tensor(rows[short]["audio_embeds"])).abs().max().item()
        assert drift > 1e-3, drift


def test_training_trajectory_is_the_same_live_and_cached(tiny_dir, data, tmp_path):
    processor = processor_for(tiny_dir)
    loaded = load(data, processor)
    trainable = {"image": 0, "audio": 0, "text": 1}  # text keeps running live next to two cached modalities
    runs = {}
    for path in ("live", "cached"):
        model = build(tiny_dir, trainable_layers=trainable, modality_dropout=0.2)
        train = loaded.dataset["train"]
        if path == "cached":
            train = cache_embeddings(train, model, processor, loaded.columns)
            assert "text_embeds" not in train.column_names and "image_embeds" in train.column_names
        counter = ForwardCounter(model)
        args = FusionTrainingArguments(
            output_dir=str(tmp_path / path), per_device_train_batch_size=4, max_steps=6, learning_rate=5e-3,
            logging_steps=1, use_cpu=True, report_to="none", seed=0, data_seed=0, save_strategy="no",
            disable_tqdm=True, dataloader_num_workers=0,
        )  # fmt: skip
        collator = FusionDataCollator(
            processor, loaded.columns, embeds_columns=None if path == "cached" else {}
        )
        trainer = FusionTrainer(model, args, train_dataset=train, data_collator=collator)
        trainer.train()
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        runs[path] = (model, counter.calls, losses)
    live_model, live_calls, live_losses = runs["live"]
    cached_model, cached_calls, cached_losses = runs["cached"]
    assert len(live_losses) == 6
    assert max(abs(a - b) for a, b in zip(live_losses, cached_losses, strict=True)) <= 1e-5
    assert live_calls["image"] == 6 and cached_calls["image"] == 0 and cached_calls["audio"] == 0
    assert cached_calls["text"] == live_calls["text"] == 6  # the trainable modality still runs live
    for (name, a), (_, b) in zip(live_model.named_parameters(), cached_model.named_parameters(), strict=True):
        assert (a - b).abs().max().item() <= 1e-5, name


def test_fingerprint_covers_weights_processor_settings_pooling_and_layer(tiny_dir):
    model = build(tiny_dir)
    processor = processor_for(tiny_dir)
    base = {name: embedding_fingerprint(model, processor, name) for name in COLUMNS}
    # Identical inputs (a model and processor loaded again, a tokenizer that has been called) -> same fingerprint.
    again, processor_again = build(tiny_dir, seed=1), processor_for(tiny_dir)
    processor_again.processors["text"](
        ["the digit is one"], padding="max_length", truncation=True, max_length=9
    )
    assert {name: embedding_fingerprint(again, processor_again, name) for name in COLUMNS} == base
    # 1. encoder weights
    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed.encoders["image"].parameters()).add_(1e-3)
    assert embedding_fingerprint(changed, processor, "image") != base["image"]
    assert embedding_fingerprint(changed, processor, "audio") == base["audio"]
    # 2. processor settings: image size, audio normalisation, audio length limit, text length limit
    for name, change in [
        ("image", lambda p: setattr(p.processors["image"], "size", {"height": 16, "width": 16})),
        ("audio", lambda p: setattr(p.processors["audio"], "do_normalize", False)),
        ("audio", lambda p: setattr(p, "max_audio_seconds", 0.1)),
        ("text", lambda p: p.modalities["text"].__setitem__("max_length", 8)),
    ]:
        other = processor_for(tiny_dir)
        change(other)
        assert embedding_fingerprint(model, other, name) != base[name], name
    # 3. pooling, 4. layer
    mean_pooled = build(tiny_dir, specs={"image": {"pooling": "mean"}})
    assert embedding_fingerprint(mean_pooled, processor, "image") != base["image"]
    lower_layer = build(tiny_dir, specs={"audio": {"layer": 1}})
    assert embedding_fingerprint(lower_layer, processor, "audio") != base["audio"]
    assert embedding_fingerprint(lower_layer, processor, "image") == base["image"]


def test_second_run_reuses_the_cache_without_encoder_forwards(tiny_dir, data, tmp_path):
    processor = processor_for(tiny_dir)
    first_model = build(tiny_dir)
    first_counter = ForwardCounter(first_model)
    first = cache_embeddings(load(data, processor).dataset, first_model, processor, COLUMNS)
    assert first_counter.calls["image"] > 0
    # A new process would load everything again: fresh dataset, model and processor objects, same files.
    second_model, second_processor = build(tiny_dir, seed=5), processor_for(tiny_dir)
    second_counter = ForwardCounter(second_model)
    second = cache_embeddings(load(data, second_processor).dataset, second_model, second_processor, COLUMNS)
    assert second_counter.calls == {"image": 0, "audio": 0, "text": 0}
    assert second["train"]["image_embeds"] == first["train"]["image_embeds"]
    assert second["train"].cache_files[-1] == first["train"].cache_files[-1]
    # A changed setting is a new cache: only the changed modality's fingerprint moved, but the map runs again.
    other_layer = build(tiny_dir, specs={"audio": {"layer": 1}})
    counter = ForwardCounter(other_layer)
    third = cache_embeddings(load(data, processor).dataset["train"], other_layer, processor, COLUMNS)
    assert counter.calls["audio"] > 0 and third["audio_embeds"] != first["train"]["audio_embeds"]
    # A media file rewritten in place (same csv, same path) is not served from the stale cache.
    image = first["train"][0]["image"]
    from PIL import Image

    Image.open(image).transpose(Image.FLIP_LEFT_RIGHT).save(image)
    counter = ForwardCounter(first_model)
    fourth = cache_embeddings(load(data, processor).dataset["train"], first_model, processor, COLUMNS)
    assert counter.calls["image"] > 0
    assert fourth[0]["image_embeds"] != first["train"][0]["image_embeds"]


def test_what_is_cached(tiny_dir, caplog):
    processor = processor_for(tiny_dir)
    model = build(tiny_dir, trainable_layers={"image": 0, "audio": 0, "text": 1})
    assert cacheable_modalities(model, processor=processor) == ["image", "audio"]
    assert "trains" in embedding_cache_plan(model)["text"]
    args = type("Args", (), {"unfreeze_schedule": {"2": {"audio": 1}}})()
    assert cacheable_modalities(model, args) == ["image"]
    args.unfreeze_schedule = "gradual"  # every encoder not already "all" will be unfrozen
    assert cacheable_modalities(model, args) == []
    attention = build(tiny_dir, specs={"image": {"pooling": "attention"}})
    assert "pooling has weights" in embedding_cache_plan(attention)["image"]
    assert cacheable_modalities(attention) == ["audio", "text"]
    # Random augmentation: 'auto' leaves that modality live (and says why), 'true' refuses naming it.
    processor.processors["image"].augment = True
    true_args = FusionTrainingArguments("unused", cache_embeddings="true", use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match=r"\['image'\].*augmentation"):
        apply_embedding_cache({}, model, processor, COLUMNS, true_args)
    with pytest.raises(ValueError, match="augmentation"):
        cache_embeddings({}, model, processor, COLUMNS, ["image"])
    assert embedding_cache_plan(model, processor)["image"].startswith(
        "its processor applies random augmentation"
    )
    auto_args = FusionTrainingArguments("unused", use_cpu=True, report_to="none")
    with caplog.at_level(logging.INFO, logger="multimodal_fusion.cache.embedding_cache"):
        _, cached = apply_embedding_cache({}, model, processor, COLUMNS, auto_args)
    assert (
        cached == ["audio"]
        and "modality 'image' runs live: its processor applies random augmentation" in caplog.text
    )
    all_trainable = build(tiny_dir, trainable_layers="all")
    with pytest.raises(ValueError, match="no modality can be cached"):
        apply_embedding_cache({}, all_trainable, processor_for(tiny_dir), COLUMNS, true_args)


def test_bad_samples_are_skipped_by_the_collator_as_live(tiny_dir, tmp_path):
    files = write_tiny_dataset(tmp_path / "bad", n_train=6, n_eval=2)
    (tmp_path / "bad" / "images" / "train_2.png").write_bytes(b"not an image")
    processor = processor_for(tiny_dir)
    model = build(tiny_dir)
    train = load(files, processor).dataset["train"]
    with pytest.raises(BadSampleError, match=r"row 2.*column 'image'.*train_2.png"):
        cache_embeddings(train, model, processor, COLUMNS)
    cached = cache_embeddings(train, model, processor, COLUMNS, skip_bad_samples=True)
    assert cached[2]["image_embeds"] is None and cached[2]["audio_embeds"] is not None
    with pytest.raises(BadSampleError, match=r"row 2.*train_2.png"):
        FusionDataCollator(processor, COLUMNS)(list(cached))
    collator = FusionDataCollator(processor, COLUMNS, skip_bad_samples=True)
    batch = collator(list(cached))
    assert (
        batch["labels"].shape[0] == 5 and batch["image_embeds"].shape == (5, 32) and collator.num_skipped == 1
    )


def test_score_dataset_from_cached_embeddings(tiny_dir, data):
    processor = processor_for(tiny_dir)
    model = build(tiny_dir, trainable_layers="all").eval()  # at inference every modality can be cached
    test = load(data, processor).dataset["test"]
    live = score_dataset(model, processor, test, COLUMNS, modalities=[], label_column="label", batch_size=4)
    counter = ForwardCounter(model)
    scored = score_dataset(model, processor, test, COLUMNS, label_column="label", batch_size=4)
    assert scored.cached_modalities == ["image", "audio", "text"] and live.cached_modalities == []
    assert abs(scored.logits - live.logits).max() <= 1e-5 and scored.logits.shape == (6, 3)
    assert list(scored.labels) == list(test["label"])
    calls = dict(counter.calls)
    again = score_dataset(model, processor, test, COLUMNS, batch_size=4)  # cached: no encoder runs
    assert counter.calls == calls and abs(again.logits - scored.logits).max() == 0


def test_half_precision_model_takes_float32_cached_vectors(tiny_dir, data):
    processor = processor_for(tiny_dir)
    model = build(tiny_dir).to(torch.bfloat16).eval()
    test = load(data, processor).dataset["test"]
    live = score_dataset(model, processor, test, COLUMNS, modalities=[])
    cached = score_dataset(model, processor, test, COLUMNS)
    assert cached.cached_modalities == ["image", "audio", "text"]
    assert abs(cached.logits - live.logits).max() <= 1e-3  # bf16 vectors round-trip through float32 exactly


def test_run_py_trains_from_the_cache_and_reuses_it(hub_ids, tmp_path, monkeypatch):
    from multimodal_fusion import embedding_cache

    encoded = []
    original = embedding_cache._Encoder.__call__
    monkeypatch.setattr(
        embedding_cache._Encoder,
        "__call__",
        lambda self, *a: encoded.append(len(a[-1])) or original(self, *a),
    )
    files = write_tiny_dataset(tmp_path / "data", n_train=12, n_eval=4)
    encoders = {"image": hub_ids["vit"], "audio": hub_ids["wav2vec2_group"], "text": hub_ids["bert"]}
    trainable = {"image": 0, "audio": 0, "text": "all"}
    runs = {}
    for name, overrides in [
        ("first", {}),
        ("second", {}),
        ("off", {"cache_embeddings": "false"}),
    ]:
        encoded.clear()
        config = write_config(
            tmp_path / f"{name}.yaml", encoders, files, tmp_path / name, max_steps=3,
            trainable_layers=trainable, train_sampling_strategy="group_by_length", **overrides,
        )  # fmt: skip
        runs[name] = (main([str(config)]), sum(encoded))
    (first, first_encoded), (second, second_encoded), (off, off_encoded) = runs.values()
    assert first_encoded == 12 + 4 + 4  # train, validation and test rows, once
    assert second_encoded == 0  # the second run loads the cache files
    assert off_encoded == 0
    assert second["eval_loss"] == pytest.approx(first["eval_loss"], abs=1e-6)
    assert off["eval_loss"] == pytest.approx(first["eval_loss"], abs=1e-4)  # live == cached
