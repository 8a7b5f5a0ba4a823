"""``python -m multimodal_fusion.demo``: data, stage 1, stage 2 for every fusion, report (see run_demo.py)."""

from .run_demo import main

main()
