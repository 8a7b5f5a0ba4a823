"""Thin entry point: ``accelerate launch training/run.py CONFIG.yaml [--flag value ...]``.

All logic lives in ``multimodal_fusion.training.run_fusion`` so it is importable and tested.
"""

from multimodal_fusion.training.run_fusion import main

if __name__ == "__main__":
    main()
