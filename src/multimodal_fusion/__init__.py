"""multimodal-fusion: merge pretrained image, audio, text and feature encoders into one Hugging Face model."""

from transformers import AutoConfig, AutoModel

from .configuration_fusion import MODALITY_KINDS, FusionConfig
from .encoder_layout import EncoderLayout
from .fusion_layers import FUSION_REGISTRY, FusionOutput, register_fusion
from .modeling_fusion import FusionModel, FusionModelOutput, FusionPreTrainedModel, load_encoder
from .pooling_layers import POOLING_REGISTRY, register_pooling

__version__ = "0.1.0"

AutoConfig.register(FusionConfig.model_type, FusionConfig, exist_ok=True)
AutoModel.register(FusionConfig, FusionModel, exist_ok=True)
FusionConfig.register_for_auto_class()
FusionModel.register_for_auto_class("AutoModel")

__all__ = [
    "FUSION_REGISTRY",
    "MODALITY_KINDS",
    "POOLING_REGISTRY",
    "EncoderLayout",
    "FusionConfig",
    "FusionModel",
    "FusionModelOutput",
    "FusionOutput",
    "FusionPreTrainedModel",
    "load_encoder",
    "register_fusion",
    "register_pooling",
]
