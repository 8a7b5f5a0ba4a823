"""The ``multimodal-fusion`` command: ``train | predict | evaluate | export | hpo | demo``.

Each subcommand has ``--help``, shows progress bars and ends with a summary. The package's own events
(unfreezing, caching, skipped samples, label mapping) are logged at INFO and shown by default; ``--quiet``
hides them. A mistake (a bad config key, an unknown name, a missing file, a bad value) is reported as one line,
with "did you mean" where a name is close; ``--debug`` (anywhere on the line) or ``MULTIMODAL_FUSION_DEBUG=1``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .errors import OneLineParser, debug_requested, one_line

logger = logging.getLogger("multimodal_fusion.cli")

EXTRAS = {
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "export",
    "optuna": "hpo",
    "matplotlib": "demo",
}
"""Optional module -> the extra that installs it."""


def require(*modules: str) -> None:
    """Exit with the ``pip install`` line to run when an optional dependency is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extras = sorted({EXTRAS.get(m, m) for m in missing})
        raise SystemExit(
            f"this command needs {', '.join(missing)}: pip install 'multimodal-fusion[{','.join(extras)}]'"
        )


def setup_logging(quiet: bool = False) -> None:
    """Package events at INFO on stderr (WARNING with ``quiet``); other libraries at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("multimodal_fusion").setLevel(logging.WARNING if quiet else logging.INFO)


def _json_mapping(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise SystemExit(f"--columns must be a JSON object modality -> column, got {text!r}")
    return value


def summary(title: str, rows: dict[str, Any]) -> None:
    """Print a two-column summary block to stdout."""
    width = max((len(k) for k in rows), default=0)
    print(f"\n== {title} ==")
    for key, value in rows.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"  {key:<{width}}  {shown}")


# ---------------------------------------------------------------------------------------------------- subcommands
def cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    from ..training.launch import main as train_main

    metrics = train_main([args.config, *rest])
    summary("training finished", {k: v for k, v in metrics.items() if not k.endswith("_runtime")})
    return 0


def cmd_hpo(args: argparse.Namespace, rest: list[str]) -> int:
    require("optuna")
    from ..training.hpo import run_hpo

    result = run_hpo([args.config, *rest])
    summary("hyperparameter search finished", result.summary())
    return 0


def cmd_predict(args: argparse.Namespace, rest: list[str]) -> int:
    from .inference_commands import predict_command

    counts = predict_command(args)
    summary("predictions written", counts)
    return 0


def cmd_evaluate(args: argparse.Namespace, rest: list[str]) -> int:
    if not args.no_plots:
        require("matplotlib")
    from .inference_commands import evaluate_command

    rows = evaluate_command(args)
    summary("evaluation", rows)
    return 0


def cmd_export(args: argparse.Namespace, rest: list[str]) -> int:
    require("onnx", "onnxscript", "onnxruntime") if args.format == "onnx" else None
    from ..inference.export import export_model

    result = export_model(args.model_dir, args.output, args.format, opset=args.opset)
    summary(f"exported ({args.format})", result)
    return 0


def cmd_demo(args: argparse.Namespace, rest: list[str]) -> int:
    require("matplotlib", "sklearn", "tokenizers")
    from ..demo.run_demo import main as demo_main
    from ..training.launch import resolve_config

    if "--config" not in rest:
        rest = ["--config", str(resolve_config("demo")), *rest]
    results = demo_main(rest)
    summary("demo finished", {f"{k} test accuracy": v for k, v in results["fused"].items()})
    return 0


# ---------------------------------------------------------------------------------------------------- parser
def _add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="a saved fusion model folder (or Hub id)")
    parser.add_argument("data", help="csv / jsonl / parquet file, save_to_disk folder or Hub dataset id")
    parser.add_argument("--split", default=None, help="split to use (default: the only one, else 'test')")
    parser.add_argument(
        "--columns",
        default=None,
        help="JSON modality -> column (default: the trained folder's, else same names)",
    )
    parser.add_argument(
        "--label-column", default=None, help="label column (default: the trained folder's, else 'label')"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    parser.add_argument(
        "--skip-bad-samples", action="store_true", help="report unreadable rows and go on instead of stopping"
    )
    parser.add_argument("--no-cache", action="store_true", help="do not reuse an existing embedding cache")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="multimodal-fusion", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quiet", action="store_true", help="hide the package's INFO events")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train a fusion model from a config (flags override it)")
    train.add_argument("config", help="YAML/JSON file or a ready config name (demo, hub-base)")
    train.set_defaults(handler=cmd_train, passthrough=True)
    hpo = sub.add_parser("hpo", help="hyperparameter search from a config's `hpo:` section (optuna)")
    hpo.add_argument("config", help="YAML/JSON file or a ready config name")
    hpo.set_defaults(handler=cmd_hpo, passthrough=True)
    predict = sub.add_parser("predict", help="predict labels and scores for every row of a dataset")
    _add_inference_arguments(predict)
    predict.add_argument("--output", required=True, help="predictions file: .csv, .jsonl or .parquet")
    predict.set_defaults(handler=cmd_predict)
    evaluate = sub.add_parser(
        "evaluate", help="metrics, confusion matrix and modality ablation on labelled data"
    )
    _add_inference_arguments(evaluate)
    evaluate.add_argument("--output-dir", default=None, help="report folder (default: MODEL_DIR/evaluation)")
    evaluate.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    evaluate.set_defaults(handler=cmd_evaluate)
    export = sub.add_parser("export", help="export the inference graph (processor tensors in, logits out)")
    export.add_argument("model_dir")
    export.add_argument("--format", choices=["onnx", "torch_export"], default="onnx")
    export.add_argument("--output", required=True, help="model.onnx or program.pt2")
    export.add_argument("--opset", type=int, default=18)
    export.set_defaults(handler=cmd_export)
    demo = sub.add_parser(  # its --help is the demo's own
        "demo", help="the offline demo end to end (--out-dir, --num-samples, --fusions ...)", add_help=False
    )
    demo.set_defaults(handler=cmd_demo, passthrough=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (1 after an error, which is printed as one line on stderr
    unless ``--debug`` or ``MULTIMODAL_FUSION_DEBUG`` asks for the traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]  # allowed anywhere, also after a passthrough command
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    setup_logging(args.quiet)
    try:
        return args.handler(args, rest)
    except Exception as error:
        if debug:
            raise
        print(
            f"multimodal-fusion {args.command}: error: {one_line(error)} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 1


def entry_point() -> None:
    """The console script."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
