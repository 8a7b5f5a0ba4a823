"""Group-norm wav2vec2 batching: one padded call with a masked GroupNorm vs one call per distinct clip length.

Both paths are exact (equal to encoding each clip alone); this measures the time per batch of 16 mixed-length
clips with a wav2vec2-base-shaped front-end (7 conv layers, stride 320) and a small transformer, on this
machine (CPU here; re-run on a GPU with ``--device cuda``). Prints the ratio measured in the same process.

    python benchmarks/audio_group_norm_batching.py [--device cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import transformers as T

from multimodal_fusion import FusionModel


def build(folder: str, hidden: int, layers: int) -> FusionModel:
    torch.manual_seed(0)
    config = T.Wav2Vec2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden * 4,
        conv_dim=(128,) * 7,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        mask_time_prob=0.0,
        layerdrop=0.0,
    )
    T.Wav2Vec2Model(config).save_pretrained(folder)
    return FusionModel.from_encoders(
        {"audio": folder}, num_labels=2, projection_dim=32, fusion_hidden_size=32
    )


def batch_of(lengths: list[int], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    values = torch.zeros(len(lengths), max(lengths))
    mask = torch.zeros(values.shape, dtype=torch.long)
    for i, n in enumerate(lengths):
        values[i, :n], mask[i, :n] = torch.randn(n, generator=generator), 1
    return values.to(device), mask.to(device)


def timed(function, repeats: int, device: str) -> float:
    function()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model = build(folder, args.hidden, args.layers).to(args.device).eval()
    lengths = [int(16000 * (0.5 + 0.25 * i)) for i in range(16)]  # 0.5 s .. 4.25 s, 16 distinct lengths
    values, mask = batch_of(lengths, args.device)
    with torch.no_grad():
        batched = model._run_encoder("audio", {"input_values": values, "attention_mask": mask})
        per_length = model._run_unpadded_audio("audio", values, mask)
        batched_s = timed(lambda: model._run_encoder("audio", {"input_values": values, "attention_mask": mask}),
                          args.repeats, args.device)  # fmt: skip
        per_length_s = timed(
            lambda: model._run_unpadded_audio("audio", values, mask), args.repeats, args.device
        )
    print(
        f"device {args.device}, batch of {len(lengths)} clips, {min(lengths) / 16000:.2f}-{max(lengths) / 16000:.2f} s"
    )
    print(
        f"max |masked batch - per-length| on pooled vectors: {(batched - per_length).abs().max().item():.2e}"
    )
    print(f"per-length path (16 encoder calls): {per_length_s * 1000:8.1f} ms / batch")
    print(f"masked GroupNorm batch (1 call):    {batched_s * 1000:8.1f} ms / batch")
    print(f"speed-up: {per_length_s / batched_s:.2f}x")


if __name__ == "__main__":
    main()
