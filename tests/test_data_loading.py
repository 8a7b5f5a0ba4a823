"""Dataset loading (csv/jsonl/parquet with relative paths, save_to_disk, labels, lengths) and the data collator
(labels, skipping bad samples, DataLoader workers)."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import soundfile as sf
import torch
from transformers import AutoImageProcessor

from multimodal_fusion import (
    BadSampleError,
    FusionDataCollator,
    FusionProcessor,
    labels_to_tensor,
    load_fusion_dataset,
)

RATE = 16000
COLUMNS = {"image": "img", "audio": "wav", "text": "caption"}  # modality -> column


@pytest.fixture(scope="module")
def processor(tiny_paths) -> FusionProcessor:
    return FusionProcessor.from_encoders(tiny_paths)


def write_media(folder: Path, count: int, rates=(8000, 22050, 16000)) -> list[dict]:
    """PNG + WAV files under ``folder/media``; returns what was written (relative paths, sizes, rates)."""
    (folder / "media").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = []
    for i in range(count):
        rate = rates[i % len(rates)]
        frames = 2000 + 700 * i
        PIL.Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(
            folder / "media" / f"{i}.png"
        )
        sf.write(folder / "media" / f"{i}.wav", (0.1 * rng.normal(size=frames)).astype(np.float32), rate)
        written.append({"img": f"media/{i}.png", "wav": f"media/{i}.wav", "frames": frames, "rate": rate})
    return written


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> Path:
    lines = [",".join(fields)] + [",".join(str(row[f]) for f in fields) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_of_relative_paths_loads_from_another_working_directory(
    processor, tiny_paths, tmp_path, monkeypatch
):
    data = tmp_path / "data"
    rows = write_media(data, 4)
    for i, row in enumerate(rows):
        row.update(caption=f"one two {i}", label=["dog", "cat", "dog", "bird"][i])
    write_csv(data / "train.csv", rows, ["img", "wav", "caption", "label"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths must not resolve against the cwd

    loaded = load_fusion_dataset(str(data / "train.csv"), COLUMNS, kinds=processor)
    train = loaded.dataset["train"]
    assert train["img"][:] == [str(data / r["img"]) for r in rows]
    assert train["wav"][:] == [str(data / r["wav"]) for r in rows]
    assert loaded.id2label == {0: "bird", 1: "cat", 2: "dog"} and loaded.label2id["dog"] == 2
    assert (loaded.num_labels, loaded.problem_type) == (3, "single_label_classification")
    assert train["label"][:] == [2, 1, 2, 0] and train["row_index"][:] == [0, 1, 2, 3]
    assert train["length"][:] == [r["frames"] / r["rate"] for r in rows]  # durations from the file headers

    batch = FusionDataCollator(processor, COLUMNS)([train[i] for i in range(4)])
    own_images = AutoImageProcessor.from_pretrained(tiny_paths["image"])
    expected_pixels = own_images([PIL.Image.open(data / r["img"]) for r in rows], return_tensors="pt")
    assert torch.equal(batch["image_pixel_values"], expected_pixels["pixel_values"])
    waves = [
        {"array": sf.read(data / r["wav"], dtype="float32")[0], "sampling_rate": r["rate"]} for r in rows
    ]
    expected = processor(audio=waves, text=[r["caption"] for r in rows])
    for key in ("audio_input_values", "audio_attention_mask", "text_input_ids"):
        assert torch.equal(batch[key], expected[key]), key
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [2, 1, 2, 0]

    # the same files as a local dataset folder resolve against that folder
    folder = load_fusion_dataset(str(data), COLUMNS, kinds=processor)
    assert folder.dataset["train"]["wav"][:] == train["wav"][:]


def test_splits_from_jsonl_and_parquet_share_label_ids(processor, tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    rows_a, rows_b = write_media(first, 3), write_media(second, 2)
    datasets.Dataset.from_list(
        [
            {"img": r["img"], "caption": "one", "label": lab}
            for r, lab in zip(rows_a, ["cat", "dog", "ant"], strict=True)
        ]
    ).to_json(first / "train.jsonl")
    datasets.Dataset.from_list(
        [{"img": r["img"], "caption": "two", "label": "dog"} for r in rows_b]
    ).to_parquet(second / "val.parquet")
    monkeypatch.chdir(tmp_path)
    loaded = load_fusion_dataset(
        {"train": str(first / "train.jsonl"), "validation": str(second / "val.parquet")},
        {"image": "img", "text": "caption"},
        kinds=processor,
    )
    assert loaded.dataset["validation"]["img"][:] == [
        str(second / r["img"]) for r in rows_b
    ]  # per-file folder
    assert loaded.dataset["train"]["img"][0] == str(first / rows_a[0]["img"])
    assert loaded.id2label == {0: "ant", 1: "cat", 2: "dog"}
    assert loaded.dataset["validation"]["label"][:] == [2, 2]  # "dog" is 2 in every split
    assert loaded.length_column == "length" and loaded.dataset["validation"]["length"][:] == [
        3.0,
        3.0,
    ]  # chars


def test_save_to_disk_folder_with_image_feature_decodes_in_the_collator(processor, tiny_paths, tmp_path):
    images = [PIL.Image.fromarray(np.full((10 + i, 12, 3), 40 * i, np.uint8)) for i in range(3)]
    features = datasets.Features(
        {
            "picture": datasets.Image(),
            "caption": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["x", "y", "z"]),
        }
    )
    datasets.Dataset.from_dict(
        {"picture": images, "caption": ["one", "two", "three"], "label": [2, 0, 1]}, features=features
    ).save_to_disk(tmp_path / "saved")
    loaded = load_fusion_dataset(tmp_path / "saved", {"image": "picture", "text": "caption"}, kinds=processor)
    train = loaded.dataset["train"]
    assert train.features["picture"] == datasets.Image(decode=False)  # decoding happens in the collator
    assert set(train[0]["picture"]) == {"bytes", "path"}
    assert loaded.id2label == {0: "x", 1: "y", 2: "z"}
    batch = FusionDataCollator(processor, {"image": "picture", "text": "caption"})(
        [train[i] for i in range(3)]
    )
    own = AutoImageProcessor.from_pretrained(tiny_paths["image"])
    assert torch.equal(batch["image_pixel_values"], own(images, return_tensors="pt")["pixel_values"])
    assert batch["labels"].tolist() == [2, 0, 1]


def test_length_column_reads_headers_only(processor, tmp_path, monkeypatch, caplog):
    rows = write_media(tmp_path, 3)
    rows.append({"img": "media/0.png", "wav": "media/missing.wav"})
    write_csv(tmp_path / "d.csv", rows, ["img", "wav"])

    def no_decoding(*args, **kwargs):
        raise AssertionError("the length pass must not decode audio")

    monkeypatch.setattr(sf, "read", no_decoding)
    with caplog.at_level(logging.WARNING, logger="multimodal_fusion.data.data_loading"):
        loaded = load_fusion_dataset(
            tmp_path / "d.csv", {"image": "img", "audio": "wav"}, kinds=processor, skip_bad_samples=True
        )  # a missing file is otherwise an error before the length pass
    assert loaded.dataset["train"]["length"][:] == [r["frames"] / r["rate"] for r in rows[:3]] + [0.0]
    assert "1 rows of column 'wav' have unreadable audio headers" in caplog.text
    assert loaded.label_column is None and loaded.id2label is None  # no label column in this file


def test_label_column_kinds(tmp_path):
    base = {"caption": ["one", "two", "three"]}
    cases = [
        ([3, 0, 1], None, {0: "0", 1: "1", 2: "2", 3: "3"}, "single_label_classification", 4, [3, 0, 1]),
        (["b", "a", "b"], ["b", "a"], {0: "b", 1: "a"}, "single_label_classification", 2, [0, 1, 0]),
        ([0.5, 1.5, -2.0], None, None, "regression", 1, [0.5, 1.5, -2.0]),
        (
            [[1, 0, 1], [0, 0, 1], [1, 1, 0]],
            ["r", "g", "b"],
            {0: "r", 1: "g", 2: "b"},
            "multi_label_classification",
            3,
            None,
        ),
    ]
    for i, (labels, names, id2label, problem_type, num_labels, stored) in enumerate(cases):
        folder = tmp_path / str(i)
        datasets.Dataset.from_dict({**base, "label": labels}).save_to_disk(folder)
        loaded = load_fusion_dataset(folder, {"text": "caption"}, label_names=names)
        assert (loaded.id2label, loaded.problem_type, loaded.num_labels) == (
            id2label,
            problem_type,
            num_labels,
        )
        if stored is not None:
            assert loaded.dataset["train"]["label"][:] == stored
    datasets.Dataset.from_dict({**base, "label": ["a", "b", "c"]}).save_to_disk(tmp_path / "bad")
    with pytest.raises(
        ValueError, match=r"label column 'label': values \['c'\] are not among the label names"
    ):
        load_fusion_dataset(tmp_path / "bad", {"text": "caption"}, label_names=["a", "b"])
    with pytest.raises(ValueError, match=r"columns \['photo'\] not found"):
        load_fusion_dataset(tmp_path / "bad", {"image": "photo"})
    with pytest.raises(ValueError, match="cannot tell the kind of modality 'left_cam'"):
        load_fusion_dataset(tmp_path / "bad", {"left_cam": "caption"})


def test_labels_to_tensor_types():
    assert labels_to_tensor([1, np.int64(2), True]).dtype == torch.long
    assert labels_to_tensor([1, np.int64(2)]).tolist() == [1, 2]
    floats = labels_to_tensor([0.5, 2])
    assert floats.dtype == torch.float32 and floats.tolist() == [0.5, 2.0]
    multi = labels_to_tensor([[1, 0, 1], np.array([0, 1, 0])])
    assert multi.dtype == torch.float32 and multi.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="row 7: label is missing"):
        labels_to_tensor([1, None], rows=[6, 7])
    with pytest.raises(ValueError, match="row 0: label 'cat' is a string"):
        labels_to_tensor(["cat"])


def _rows_with_bad_samples(tmp_path: Path) -> list[dict]:
    media = write_media(tmp_path, 4)
    (tmp_path / "media" / "corrupt.wav").write_bytes(b"RIFF nonsense")
    rows = [
        {
            "img": str(tmp_path / m["img"]),
            "wav": str(tmp_path / m["wav"]),
            "caption": f"one {i}",
            "label": i % 3,
        }
        for i, m in enumerate(media)
    ]
    rows.insert(
        1, {"img": str(tmp_path / "media/gone.png"), "wav": rows[0]["wav"], "caption": "two", "label": 1}
    )
    rows.insert(
        3, {"img": rows[0]["img"], "wav": str(tmp_path / "media/corrupt.wav"), "caption": "x", "label": 2}
    )
    rows.append(
        {"img": rows[0]["img"], "wav": rows[0]["wav"], "caption": 17, "label": 0}
    )  # text not a string
    for index, row in enumerate(rows):
        row["row_index"] = 100 + index
    return rows  # bad: row_index 101 (missing png), 103 (corrupt wav), 106 (int caption)


def test_collator_raises_for_bad_samples_naming_row_column_and_file(processor, tmp_path):
    rows = _rows_with_bad_samples(tmp_path)
    collator = FusionDataCollator(processor, COLUMNS)
    with pytest.raises(BadSampleError) as info:
        collator(rows)
    message = str(info.value)
    assert "row 101" in message and "column 'img'" in message and str(tmp_path / "media/gone.png") in message
    with pytest.raises(
        BadSampleError, match=r"row 103, column 'wav', modality 'audio', file '.*corrupt\.wav'"
    ):
        collator(rows[2:])
    with pytest.raises(BadSampleError, match=r"row 106, column 'caption', modality 'text'.*text of type int"):
        collator(rows[-1:])
    with pytest.raises(KeyError, match="remove_unused_columns=False"):
        collator([{"img": rows[0]["img"], "caption": "one"}])


def test_collator_skips_bad_samples_counts_and_logs_them_once(processor, tmp_path, caplog):
    rows = _rows_with_bad_samples(tmp_path)
    good = [r for r in rows if r["row_index"] not in (101, 103, 106)]
    collator = FusionDataCollator(processor, COLUMNS, skip_bad_samples=True)
    with caplog.at_level(logging.WARNING, logger="multimodal_fusion.data.data_collator"):
        batch = collator(rows)
        again = collator(rows)
    expected = FusionDataCollator(processor, COLUMNS)(good)
    assert batch.keys() == expected.keys()
    for key in expected:
        assert torch.equal(batch[key], expected[key]) and torch.equal(again[key], expected[key]), key
    assert batch["labels"].tolist() == [r["label"] for r in good]  # labels stay aligned with their samples
    assert collator.num_skipped == 6  # 3 per call
    assert caplog.text.count("skipping bad sample") == 3  # each logged once, with its file
    assert caplog.text.count(str(tmp_path / "media/gone.png")) == 1
    assert [s["row"] for s in collator.skipped_samples] == [101, 103, 106]
    with pytest.raises(ValueError, match="every sample of this batch was bad"):
        collator([rows[1]])


def test_collator_is_picklable_and_counts_skips_from_dataloader_workers(processor, tmp_path):
    rows = _rows_with_bad_samples(tmp_path)
    collator = FusionDataCollator(processor, COLUMNS, skip_bad_samples=True)
    copy = pickle.loads(pickle.dumps(collator))
    in_process = [copy(rows[i : i + 4]) for i in range(0, len(rows), 4)]
    loader = torch.utils.data.DataLoader(rows, batch_size=4, collate_fn=collator, num_workers=2)
    for _ in range(2):  # two epochs: fresh worker processes each time
        batches = list(loader)
    assert len(batches) == len(in_process)
    for got, want in zip(batches, in_process, strict=True):
        for key in want:
            assert torch.equal(got[key], want[key]), key
    assert collator.num_skipped == 6  # 3 bad rows x 2 epochs, counted in the workers
    assert copy.num_skipped == 3  # a pickled copy counts on its own
    collator.reset_skip_count()
    assert collator.num_skipped == 0


def test_columns_map_modality_to_column_and_the_old_direction_warns(processor, tmp_path):
    """``columns`` is modality -> column everywhere; column -> modality still works (one release) with a
    FutureWarning and gives exactly the same batches."""
    from multimodal_fusion.data.column_mapping import modality_columns

    data = tmp_path / "data"
    rows = write_media(data, 4)
    for i, row in enumerate(rows):
        row.update(caption=f"one two {i}", label=["dog", "cat", "dog", "bird"][i])
    write_csv(data / "train.csv", rows, ["img", "wav", "caption", "label"])
    loaded = load_fusion_dataset(str(data / "train.csv"), COLUMNS, kinds=processor)
    assert loaded.columns == COLUMNS
    old = {column: name for name, column in COLUMNS.items()}
    with pytest.warns(FutureWarning, match="modality -> column"):
        old_loaded = load_fusion_dataset(str(data / "train.csv"), old, kinds=processor)
    assert old_loaded.columns == COLUMNS
    rows = [loaded.dataset["train"][i] for i in range(4)]
    with pytest.warns(FutureWarning):
        old_batch = FusionDataCollator(processor, old)(rows)
    new_batch = FusionDataCollator(processor, COLUMNS)(rows)
    assert old_batch.keys() == new_batch.keys()
    assert all(torch.equal(old_batch[k], new_batch[k]) for k in new_batch)
    names = ["image", "audio", "text"]
    assert modality_columns(None, names) == {"image": "image", "audio": "audio", "text": "text"}
    assert modality_columns({"image": "audio", "audio": "image"}, names) == {
        "image": "audio",
        "audio": "image",
    }
    with pytest.raises(ValueError, match=r"unknown modalities \['video'\]"):
        modality_columns({"video": "clip"}, names)
    with (
        pytest.raises(ValueError, match="modality 'image' is read from two columns"),
        pytest.warns(FutureWarning),
    ):
        modality_columns({"a": "image", "b": "image"}, names)


def test_label_typo_warns_without_label_names_and_is_an_error_with_them(tmp_path, caplog):
    from multimodal_fusion.data.label_checks import edit_distance

    labels = ["dog", "cat"] * 10 + ["dgo"]
    datasets.Dataset.from_dict({"caption": ["x"] * len(labels), "label": labels}).save_to_disk(tmp_path / "d")
    with caplog.at_level(logging.WARNING):
        loaded = load_fusion_dataset(tmp_path / "d", {"text": "caption"})
    assert loaded.num_labels == 3  # the typo is a class of its own: hence the warning
    assert "'dgo' (1 row)" in caplog.text and "'dgo' (1) / 'dog' (10)" in caplog.text
    assert "'cat' (10" not in caplog.text.split("very few rows")[1].split(";")[0]
    assert edit_distance("dgo", "dog") == 1 and edit_distance("cat", "dog") == 3
    caplog.clear()
    with pytest.raises(ValueError, match=r"values \['dgo'\] are not among the label names.*row 20: 'dgo'"):
        load_fusion_dataset(tmp_path / "d", {"text": "caption"}, label_names=["cat", "dog"])
    balanced = ["class_1", "class_2"] * 5
    datasets.Dataset.from_dict({"caption": ["x"] * 10, "label": balanced}).save_to_disk(tmp_path / "ok")
    with caplog.at_level(logging.WARNING):
        load_fusion_dataset(tmp_path / "ok", {"text": "caption"})
    assert "label column" not in caplog.text


def test_missing_media_files_are_found_from_paths_alone(tmp_path, caplog, monkeypatch):
    """``check_media_files``: string paths and the ``path`` of undecoded Image structs without bytes are checked
    with ``os.path`` (structs carrying bytes are not files); an error names split, row, column and path, or with
    ``skip_bad_samples`` a warning and the count."""
    from multimodal_fusion.data.data_loading import check_media_files

    media = write_media(tmp_path, 2)
    present, gone = str(tmp_path / media[0]["img"]), str(tmp_path / "media" / "gone.png")
    png = (tmp_path / media[0]["img"]).read_bytes()
    images = datasets.Dataset.from_dict(
        {"img": [{"bytes": None, "path": present}, {"bytes": png, "path": gone}, {"bytes": None, "path": gone}],
         "wav": [str(tmp_path / media[0]["wav"]), None, str(tmp_path / "media" / "gone.wav")],
         "row_index": [7, 8, 9]},
        features=datasets.Features({"img": datasets.Image(decode=False), "wav": datasets.Value("string"),
                                    "row_index": datasets.Value("int64")}),
    )  # fmt: skip
    splits = datasets.DatasetDict({"test": images})
    opened = []
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: opened.append(a))
    with pytest.raises(FileNotFoundError) as info:
        check_media_files(splits, {"image": "img", "audio": "wav"})
    assert str(info.value) == (
        f"2 media file(s) not found: split 'test' row 9, column 'img': {gone}; "
        f"split 'test' row 9, column 'wav': {tmp_path / 'media' / 'gone.wav'}"
    )
    with caplog.at_level(logging.WARNING, logger="multimodal_fusion.data.data_loading"):
        missing = check_media_files(splits, {"image": "img", "audio": "wav"}, skip_bad_samples=True)
    assert [(m["row"], m["modality"]) for m in missing] == [(9, "image"), (9, "audio")]
    assert "2 media files not found" in caplog.text and not opened  # nothing opened or decoded
    rows = [{"img": media[0]["img"], "wav": "media/gone.wav", "caption": "a", "label": 0}]
    path = write_csv(tmp_path / "data.csv", rows, ["img", "wav", "caption", "label"])
    loaded = load_fusion_dataset(str(path), COLUMNS, skip_bad_samples=True, length_column=None)
    assert loaded.missing_files == 1 and len(loaded.dataset["train"]) == 1  # kept: the collator skips it
    with pytest.raises(FileNotFoundError, match=r"data file '.*data.csv' row 0, column 'wav': .*gone.wav"):
        load_fusion_dataset(str(path), COLUMNS, length_column=None)
