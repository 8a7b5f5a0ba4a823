"""multimodal-fusion: merge pretrained image, audio, text and feature encoders into one Hugging Face model."""

from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .bad_samples import BadSampleError
from .configuration_fusion import MODALITY_KINDS, FusionConfig, ModalitySpec
from .data_collator import FusionDataCollator, labels_to_tensor
from .data_loading import LoadedDataset, add_length_column, encode_labels, load_fusion_dataset
from .embedding_cache import cache_embeddings, embedding_fingerprint
from .encoder_adapters import ENCODER_ADAPTERS, EncoderAdapter, register_adapter
from .encoder_layout import EncoderLayout
from .fusion_layers import FUSION_REGISTRY, FusionOutput, register_fusion
from .hub import push_model_to_hub
from .inference import ScoringOutput, score_dataset
from .modeling_fusion import FusionModel, FusionModelOutput, FusionPreTrainedModel, load_encoder
from .pipeline_fusion import TASK as PIPELINE_TASK
from .pipeline_fusion import FusedClassificationPipeline
from .pooling_layers import POOLING_REGISTRY, register_pooling
from .processing_fusion import FusionProcessor

__version__ = "0.1.0"

AutoConfig.register(FusionConfig.model_type, FusionConfig, exist_ok=True)
AutoModel.register(FusionConfig, FusionModel, exist_ok=True)
FusionConfig.register_for_auto_class()
FusionModel.register_for_auto_class("AutoModel")
AutoProcessor.register(FusionConfig, FusionProcessor, exist_ok=True)
FusionPreTrainedModel.hub_uploader = push_model_to_hub  # the model layer cannot import the Hub layer
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=FusedClassificationPipeline, pt_model=AutoModel, type="multimodal"
)

__all__ = [
    "ENCODER_ADAPTERS",
    "FUSION_REGISTRY",
    "MODALITY_KINDS",
    "ModalitySpec",
    "POOLING_REGISTRY",
    "ScoringOutput",
    "BadSampleError",
    "EncoderAdapter",
    "EncoderLayout",
    "FusionConfig",
    "FusedClassificationPipeline",
    "FusionDataCollator",
    "FusionModel",
    "FusionModelOutput",
    "FusionOutput",
    "FusionPreTrainedModel",
    "FusionProcessor",
    "LoadedDataset",
    "add_length_column",
    "cache_embeddings",
    "embedding_fingerprint",
    "encode_labels",
    "labels_to_tensor",
    "load_fusion_dataset",
    "load_encoder",
    "register_adapter",
    "register_fusion",
    "register_pooling",
    "push_model_to_hub",
    "score_dataset",
]
