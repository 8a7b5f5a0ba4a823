"""multimodal-fusion: merge pretrained image, audio, text and feature encoders into one Hugging Face model."""

from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from . import _legacy_paths
from .cache.embedding_cache import cache_embeddings, embedding_fingerprint
from .data.data_collator import FusionDataCollator, labels_to_tensor
from .data.data_loading import LoadedDataset, add_length_column, encode_labels, load_fusion_dataset
from .hub.upload import push_model_to_hub
from .inference.scoring import ScoringOutput, score_dataset
from .model.bad_samples import BadSampleError
from .model.configuration_fusion import MODALITY_KINDS, FusionConfig, ModalitySpec
from .model.encoder_adapters import ENCODER_ADAPTERS, EncoderAdapter, register_adapter
from .model.encoder_layout import EncoderLayout
from .model.fusion_layers import POOLED_FUSIONS, TOKEN_FUSIONS, FusionOutput, register_fusion
from .model.fusions import FUSION_REGISTRY
from .model.modality_kinds import MODALITY_KIND_REGISTRY, ModalityKind, register_modality_kind
from .model.modeling_fusion import FusionModel, FusionModelOutput, FusionPreTrainedModel, load_encoder
from .model.pipeline_fusion import TASK as PIPELINE_TASK
from .model.pipeline_fusion import FusedClassificationPipeline
from .model.pooling_layers import POOLING_REGISTRY, POOLINGS, register_pooling
from .model.processing_fusion import FusionProcessor
from .model.registry import Registry

__version__ = "0.1.0"

_legacy_paths.install()

AutoConfig.register(FusionConfig.model_type, FusionConfig, exist_ok=True)
AutoModel.register(FusionConfig, FusionModel, exist_ok=True)
FusionConfig.register_for_auto_class()
FusionModel.register_for_auto_class("AutoModel")
AutoProcessor.register(FusionConfig, FusionProcessor, exist_ok=True)
FusionPreTrainedModel.hub_uploader = push_model_to_hub  # the model layer cannot import the Hub layer
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=FusedClassificationPipeline, pt_model=AutoModel, type="multimodal"
)


def list_fusions(token_level: bool | None = None) -> dict[str, str]:
    """Registered fusions, name -> one-line description: pooled and token-level (``token_level=False`` / ``True``
    for one table)."""
    tables = {None: FUSION_REGISTRY, False: POOLED_FUSIONS, True: TOKEN_FUSIONS}[token_level]
    return tables.describe()


def list_poolings() -> dict[str, str]:
    """Registered poolings (the values of a spec's ``pooling``), name -> one-line description."""
    return POOLINGS.describe()


def list_encoder_adapters() -> dict[str, str]:
    """Registered encoder-family adapters, name -> one-line description."""
    return ENCODER_ADAPTERS.describe()


def list_modality_kinds() -> dict[str, str]:
    """Registered modality kinds (the values of a spec's ``kind``), name -> one-line description."""
    return MODALITY_KIND_REGISTRY.describe()


__all__ = [
    "ENCODER_ADAPTERS",
    "FUSION_REGISTRY",
    "MODALITY_KIND_REGISTRY",
    "ModalityKind",
    "register_modality_kind",
    "POOLED_FUSIONS",
    "POOLINGS",
    "Registry",
    "TOKEN_FUSIONS",
    "list_encoder_adapters",
    "list_modality_kinds",
    "list_fusions",
    "list_poolings",
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
