"""Freezing of a fusion model's encoders: which parameters train (``trainable_layers``), and eval mode for what
does not (no dropout, no BatchNorm statistics drift in frozen parts, even under ``model.train()``).

This file is copied next to the weights by ``save_pretrained`` (``trust_remote_code`` loading), so it imports
only torch and sibling modules of this folder.
"""

from __future__ import annotations

from torch import nn

from .configuration_fusion import check_trainable_layers
from .encoder_layout import EncoderLayout, block_module_names


class EncoderFreezingMixin:
    """``trainable_layers`` for [`FusionModel`]: reads ``self.config.modalities`` and ``self.encoders`` (a
    ``ModuleDict`` by modality name) and ``self.adapters`` (each encoder's family adapter), and caches each encoder's layout in ``self._layouts``."""

    def encoder_layout(self, name: str) -> EncoderLayout:
        """Parameter names of modality ``name``'s encoder grouped into embeddings, blocks, final norm..."""
        if name not in self._layouts:  # the family adapter knows the layout (a module's, an MLP's, timm's...)
            spec = self.config.modalities[name]
            self._layouts[name] = self.adapters[name].layout(name, self.encoders[name], spec)
        return self._layouts[name]

    def encoder_blocks(self, name: str) -> list[nn.Module]:
        """Modality ``name``'s encoder blocks, bottom to top (a block's main module; timm's last block also
        owns the final norm)."""
        encoder = self.encoders[name]
        blocks = []
        for block in self.encoder_layout(name).blocks:
            paths = block_module_names(encoder, block)
            blocks.append(encoder.get_submodule(paths[0]) if paths else encoder)
        return blocks

    @property
    def trainable_layers(self) -> dict[str, int | str]:
        """Current ``trainable_layers`` per modality."""
        return {name: spec.trainable_layers for name, spec in self.config.modalities.items()}

    def set_trainable_layers(self, name: str, value: int | str) -> None:
        """Change what trains in modality ``name``'s encoder (0 frozen, k top blocks, ``"all"``), now and in
        the saved config. Frozen modules go to eval mode; unfrozen ones follow ``model.training``."""
        if name not in self.config.modalities:
            raise ValueError(f"unknown modality '{name}'; modalities are {self.config.modality_names}")
        self.config.modalities[name].trainable_layers = check_trainable_layers(name, value)
        self._apply_trainable(name)
        self.train(self.training)

    def apply_trainable_layers(self) -> None:
        """Set ``requires_grad`` on every encoder from the config's ``trainable_layers``."""
        for name in self.config.modalities:
            self._apply_trainable(name)
        self.train(self.training)

    def _apply_trainable(self, name: str) -> None:
        spec = self.config.modalities[name]
        try:
            trainable = self.encoder_layout(name).trainable_names(
                spec.trainable_layers, spec.train_feature_encoder
            )
        except ValueError as error:
            if str(error).startswith(f"modality '{name}'"):
                raise
            raise ValueError(f"modality '{name}': {error}") from None
        for param_name, param in self.encoders[name].named_parameters():
            param.requires_grad_(param_name in trainable)

    def train(self, mode: bool = True):
        """As ``nn.Module.train``, but encoder parts with no trainable parameter stay in eval mode (no dropout,
        no BatchNorm statistics drift)."""
        super().train(mode)
        if mode:
            for encoder in self.encoders.values():
                if not any(p.requires_grad for p in encoder.parameters()):
                    encoder.eval()  # fully frozen: what the walk below gives, without its cost on every step
                    continue
                trainable_prefixes = set()
                for param_name, param in encoder.named_parameters():
                    if param.requires_grad:
                        parts = param_name.split(".")
                        trainable_prefixes.update(".".join(parts[:i]) for i in range(len(parts)))
                for module_name, module in encoder.named_modules():
                    if module_name not in trainable_prefixes and any(True for _ in module.parameters()):
                        module.eval()
        return self
