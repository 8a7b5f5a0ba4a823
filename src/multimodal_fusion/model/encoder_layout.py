"""Where an encoder's parameters sit: embeddings, repeated blocks (bottom to top), final norm, and the parts
that never train. Freezing (``trainable_layers``), gradual unfreezing and layer-wise learning rates all read
this one description.

A *block* is the encoder's repeated unit: the transformer layers of transformers models (ViT, BERT,
wav2vec2's transformer), and timm's coarse parameter groups (stages for CNNs, blocks for ViTs; timm folds the
final norm into the last block). A convolutional front-end (wav2vec2's) is not a block. What is family-specific
(timm's groups, the front-end's and the final norm's prefixes, the pooling head) is the encoder adapter's
(``adapter_base.EncoderAdapter.layout``); this file only groups parameter names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


@dataclass
class EncoderLayout:
    """Parameter names of one encoder (relative to it), grouped by role; built by [`encoder_layout`], read by
    freezing (``trainable_layers``), gradual unfreezing and layer-wise learning rates.

    Attributes:
        embeddings: below the first block (patch / token / position embeddings); train only with ``"all"``.
        blocks: one list of names per block, bottom to top; ``trainable_layers=k`` trains the last ``k``.
        final: the norm after the last block; trains with any ``k > 0`` ("top k blocks" includes it).
        pooler: the encoder's pooling head (e.g. BERT's pooler); trains with ``k > 0`` unless ``unused``.
        feature_encoder: wav2vec2's convolutional front-end; trains only with ``"all"`` and
            ``train_feature_encoder``.
        unused: parameters that can never get a gradient with this pooling / layer (never trainable, so DDP
            needs no unused-parameter search).
        always_trainable: parameters that train whatever ``trainable_layers`` says (a module encoder's
            ``trainable_modules``).

    Example (a 2-layer BERT pooled with ``cls``, so its pooler is unused)::

        layout = model.encoder_layout("text")
        layout.blocks[-1][:1]                 # ['encoder.layer.1.attention.self.query.weight']
        layout.unused[:1]                     # ['pooler.dense.weight']
        layout.trainable_names(1) == set(layout.blocks[-1])  # True: the top block (BERT has no final norm)
    """

    embeddings: list[str] = field(default_factory=list)
    blocks: list[list[str]] = field(default_factory=list)
    final: list[str] = field(default_factory=list)
    pooler: list[str] = field(default_factory=list)
    feature_encoder: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    always_trainable: list[str] = field(default_factory=list)

    def trainable_names(self, trainable_layers: int | str, train_feature_encoder: bool = False) -> set[str]:
        """Names that train for ``trainable_layers`` (0, top k blocks + final norm + pooler, or ``"all"``), plus
        ``always_trainable``."""
        return self._layer_names(trainable_layers, train_feature_encoder) | (
            set(self.always_trainable) - set(self.unused)
        )

    def _layer_names(self, trainable_layers: int | str, train_feature_encoder: bool) -> set[str]:
        unused = set(self.unused)
        if trainable_layers == "all":
            names = self.embeddings + [n for b in self.blocks for n in b] + self.final + self.pooler
            if train_feature_encoder:
                names += self.feature_encoder
            return set(names) - unused
        if trainable_layers == 0:
            return set()
        usable = self.usable_blocks
        if trainable_layers > len(usable):
            raise ValueError(
                f"`trainable_layers` is {trainable_layers} but the encoder has {len(usable)} usable blocks; "
                "use a smaller number or 'all'"
            )
        names = [n for b in usable[len(usable) - trainable_layers :] for n in b] + self.final + self.pooler
        return set(names) - unused

    @property
    def usable_blocks(self) -> list[list[str]]:
        """Blocks that feed the pooled output (those above a chosen intermediate ``layer`` do not)."""
        unused = set(self.unused)
        return [b for b in self.blocks if not set(b) <= unused]


def _block_module_list(encoder: nn.Module, exclude: tuple[str, ...]) -> str | None:
    """Name of the encoder's repeated-block ``ModuleList``: the largest homogeneous one by parameter count."""
    best, best_count = None, 0
    for name, module in encoder.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any((name + ".").startswith(p) for p in exclude) or len({type(m) for m in module}) != 1:
            continue
        count = sum(p.numel() for p in module.parameters())
        if count > best_count:
            best, best_count = name, count
    return best


def encoder_layout(
    encoder: nn.Module,
    pooling: str | None,
    layer: int | None = None,
    pooler_prefixes: tuple[str, ...] = ("pooler.",),
    block_list: str | None = None,
    unused_prefixes: tuple[str, ...] = (),
    feature_encoder_prefixes: tuple[str, ...] = (),
    final_prefixes: tuple[str, ...] = (),
) -> EncoderLayout:
    """Describe ``encoder``'s parameters; ``pooling`` and ``layer`` decide which parts are unused.
    ``pooler_prefixes`` name the family's pooling head, ``block_list`` the module list of its blocks (found
    as the largest homogeneous ``ModuleList`` when ``None``), ``unused_prefixes`` parameters that are never on
    the forward path (frozen), ``feature_encoder_prefixes`` a convolutional front-end that is not a block and
    ``final_prefixes`` a final norm listed before the blocks (both given by the family's encoder adapter).

    Raises:
        ValueError: ``layer`` out of range for the number of blocks.
    """
    names = [n for n, _ in encoder.named_parameters()]
    layout = EncoderLayout()
    if not names:
        return layout
    front = tuple(feature_encoder_prefixes)
    layout.feature_encoder = [n for n in names if front and n.startswith(front)]
    layout.pooler = [n for n in names if n.startswith(tuple(pooler_prefixes))]
    block_list = block_list or _block_module_list(encoder, front)
    index_of = {n: i for i, n in enumerate(names)}
    if block_list is not None:
        count = len(encoder.get_submodule(block_list))
        layout.blocks = [[n for n in names if n.startswith(f"{block_list}.{i}.")] for i in range(count)]
    in_blocks = {n for b in layout.blocks for n in b}
    first_block = min((index_of[n] for n in in_blocks), default=len(names))
    final = tuple(final_prefixes)
    for n in names:
        if n in in_blocks or n in layout.pooler or n in layout.feature_encoder:
            continue
        after = index_of[n] > first_block or bool(final and n.startswith(final))
        (layout.final if after else layout.embeddings).append(n)
    if pooling != "pooler":
        layout.unused += layout.pooler
        layout.pooler = []
    layout.unused += [n for n in names if unused_prefixes and n.startswith(tuple(unused_prefixes))]
    if layer is not None and layout.blocks:
        depth = layer if layer >= 0 else len(layout.blocks) + 1 + layer
        if not 0 <= depth <= len(layout.blocks):
            raise ValueError(
                f"`layer` {layer} is out of range for an encoder with {len(layout.blocks)} blocks"
            )
        layout.unused += [n for b in layout.blocks[depth:] for n in b] + layout.final + layout.pooler
    return layout


def block_module_names(encoder: nn.Module, block: list[str]) -> list[str]:
    """The fewest module paths whose parameters are exactly ``block`` (e.g. ``["layers.3"]``)."""
    members = set(block)
    owners: dict[str, set[str]] = {}
    for name, _ in encoder.named_parameters():
        parts = name.split(".")
        for i in range(len(parts)):
            owners.setdefault(".".join(parts[:i]), set()).add(name)
    chosen: list[str] = []
    for name in block:
        parts = name.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if owners[prefix] <= members:
                if prefix not in chosen:
                    chosen.append(prefix)
                break
    return chosen
