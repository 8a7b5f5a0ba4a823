"""The Hugging Face Hub: one commit with weights, config, code, processor and model card; run folders."""

from .upload import push_folder, push_model_to_hub, write_model_card

__all__ = ["push_folder", "push_model_to_hub", "write_model_card"]
