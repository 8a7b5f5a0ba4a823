"""Run training/run.py's pipeline under ``accelerate launch`` and dump each rank's in-memory weights."""

import sys
from pathlib import Path

import torch

from multimodal_fusion.training.run_fusion import parse_arguments, run

if __name__ == "__main__":
    trainer = run(*parse_arguments(sys.argv[1:])).trainer
    rank = trainer.args.process_index
    state = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
    torch.save(
        {"state": state, "world_size": trainer.args.world_size, "log_history": trainer.state.log_history,
         "find_unused": trainer.args.ddp_find_unused_parameters},
        Path(trainer.args.output_dir) / f"rank{rank}.pt",
    )  # fmt: skip
