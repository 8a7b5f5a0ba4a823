"""Encoders from your own PyTorch networks: a torchvision model, an LSTM, an ``nn.TransformerEncoder``, an MLP.

A modality whose spec has ``module`` (an ``nn.Module`` instance or an import path ``"package.module:factory"``)
gets a [`ModuleEncoder`] around that network. Its pretrained ``weights`` (a state-dict file) are loaded strictly
into the *full* network first; ``feature_layer`` is applied afterwards (torchvision's ``create_feature_extractor``
for torchvision models, a forward hook otherwise), so a complete checkpoint with its classifier still loads.

This file is copied next to the weights by ``save_pretrained`` (``trust_remote_code`` loading): it imports only
torch, transformers and sibling files. Factories and torchvision are imported dynamically (``importlib``) where a
spec names them, so a checkpoint needs only the packages its own modules come from.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .configuration_fusion import ModalitySpec
from .encoder_layout import EncoderLayout
from .modality_kinds import get_kind

"""Default pooling of ``[B, T, D]`` module outputs per kind; recurrent networks pool their ``last`` valid step."""

_BATCH_FIRST_TYPES = (nn.RNNBase, nn.MultiheadAttention)
"""Modules with a ``batch_first`` flag that must be True (transformer layers hold a ``MultiheadAttention``)."""


# ---------------------------------------------------------------------------------------------- import
def import_factory(name: str, path: str) -> Any:
    """The callable named by ``"package.module:attribute"`` (dotted attributes allowed)."""
    module_path, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_path)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ImportError(
            f"modality '{name}': cannot import `module` '{path}' ({error}); install the package that defines it, "
            f"or pass the network itself with `encoders={{'{name}': module}}`"
        ) from error
    return target


def instantiate(name: str, spec: ModalitySpec) -> nn.Module:
    """Build the network of a spec from its import path and ``module_kwargs`` (random weights)."""
    if spec.network.module_from_instance:
        raise ValueError(
            f"modality '{name}': the encoder was built from a module instance ({spec.network.module}), which cannot be "
            f"rebuilt from the config; pass it back with `FusionModel.from_pretrained(path, encoders={{'{name}': "
            "module})`"
        )
    module = import_factory(name, spec.network.module)(**spec.network.module_kwargs)
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"modality '{name}': `module` '{spec.network.module}' returned {type(module).__name__}, not nn.Module"
        )
    return module


# ---------------------------------------------------------------------------------------------- weights
def read_state_dict(name: str, path: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pth``/``.pt``/``.bin`` state dict read with
    ``torch.load(weights_only=True)`` (no pickled code runs; a whole pickled module is refused)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"modality '{name}': `weights` file '{path}' does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refused: a whole module or arbitrary objects
        raise ValueError(
            f"modality '{name}': `weights` '{path}' is not a plain state dict loadable with weights_only=True "
            f"(save `module.state_dict()`, not the module): {error}"
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"modality '{name}': `weights` '{path}' must hold a flat state dict of tensors "
            "(`torch.save(module.state_dict(), path)`)"
        )
    return state


def load_weights_strictly(name: str, module: nn.Module, path: str) -> None:
    """Load a state-dict file into the full ``module``; any missing, unexpected or mis-shaped key is an error
    naming the modality and the keys. Values are copied as they are (bit-for-bit at the module's dtype)."""
    state = read_state_dict(name, path)
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"modality '{name}': `weights` '{path}' does not match the module: missing keys {missing[:10]}, "
            f"unexpected keys {unexpected[:10]}"
            + (" (more not shown)" if len(missing) > 10 or len(unexpected) > 10 else "")
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"modality '{name}': `weights` '{path}' does not match the module: {error}"
        ) from error


# ---------------------------------------------------------------------------------------------- feature layer
def _is_torchvision(module: nn.Module) -> bool:
    return type(module).__module__.startswith("torchvision.")


def _torchvision_extractor(name: str, module: nn.Module, node: str) -> nn.Module:
    extraction = importlib.import_module("torchvision.models.feature_extraction")
    train_nodes, eval_nodes = extraction.get_graph_node_names(module)

    def known(nodes: list[str]) -> bool:  # a full node name, or a module whose last node torchvision returns
        return node in nodes or any(n.startswith(node + ".") for n in nodes)

    if not known(train_nodes) or not known(eval_nodes):
        close = difflib.get_close_matches(node, eval_nodes, n=8, cutoff=0.3)
        raise ValueError(
            f"modality '{name}': `feature_layer` '{node}' is not a node of {type(module).__name__}; close "
            f"matches {close}; all nodes: torchvision.models.feature_extraction.get_graph_node_names(module)"
        )
    return extraction.create_feature_extractor(module, return_nodes=[node])


def check_batch_first(name: str, module: nn.Module) -> None:
    """Recurrent and attention layers must take ``[batch, time, ...]``: a silent batch/time swap is an error."""
    for path, sub in module.named_modules():
        if isinstance(sub, _BATCH_FIRST_TYPES) and not getattr(sub, "batch_first", False):
            raise ValueError(
                f"modality '{name}': {type(sub).__name__} '{path or '(the module)'}' has batch_first=False; "
                "module encoders take [batch, time, ...] inputs, build it with batch_first=True"
            )


# ---------------------------------------------------------------------------------------------- the encoder
class _FeatureLayerReached(Exception):
    """Raised by the ``feature_layer`` hook to end the network's forward once the wanted output exists."""


class ModuleEncoder(nn.Module):
    """Runs a user network on one modality's batch fields and returns its output as tokens or a pooled vector.

    Args:
        network: the network, with its weights already loaded (its parameters appear under ``module.``).
        kind: ``image`` (``pixel_values``), ``audio`` (``input_features`` ``[B, T, F]`` + ``attention_mask``),
            ``text`` (``input_ids`` + ``attention_mask``) or ``features`` (``values``).
        feature_layer: the node whose output is the encoder's output; ``None`` = the network's own output (a
            tuple's first element).
        modality: the modality name, for error messages.

    ``forward(fields)`` returns ``(hidden, token_mask)``: ``hidden`` ``[B, D]`` (pooled) or ``[B, T, D]`` tokens
    (a ``[B, C, H, W]`` map becomes ``[B, H*W, C]``); ``token_mask`` ``[B, T]`` (True = valid) or ``None``. A
    recurrent network (``nn.LSTM``/``nn.GRU``/``nn.RNN`` as the module) runs on packed sequences, so padding
    cannot change any valid step. A network whose ``forward`` has an ``attention_mask`` keyword gets it (1 = valid).
    """

    def __init__(self, network: nn.Module, kind: str, feature_layer: str | None = None, modality: str = ""):
        super().__init__()
        check_batch_first(modality, network)
        self.modality, self.kind = modality, kind
        self.hook_layer: str | None = None
        self.graph_node: str | None = None
        keywords = inspect.signature(network.forward).parameters
        self.keywords = [k for k in get_kind(kind).module_fields[1] if k in keywords]
        self.recurrent = isinstance(network, nn.RNNBase)
        if feature_layer is not None and _is_torchvision(network):
            network, self.graph_node = _torchvision_extractor(modality, network, feature_layer), feature_layer
        elif feature_layer is not None:
            names = dict(network.named_modules())
            if feature_layer not in names or not feature_layer:
                close = difflib.get_close_matches(feature_layer, list(names), n=8, cutoff=0.3)
                raise ValueError(
                    f"modality '{modality}': `feature_layer` '{feature_layer}' is not a submodule of "
                    f"{type(network).__name__}; close matches {close}"
                )
            self.hook_layer = feature_layer
        self.module = network
        self._buffer_snapshot = {k: v.detach().clone() for k, v in self.non_persistent_buffers().items()}

    def non_persistent_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers that are not in the state dict (so not in ``model.safetensors``), by name relative to self."""
        out = {}
        for path, sub in self.named_modules():
            for key in sub._non_persistent_buffers_set:
                buffer = sub._buffers.get(key)
                if buffer is not None:
                    out[f"{path}.{key}" if path else key] = buffer
        return out

    def restore_non_persistent_buffers(self) -> None:
        """Put back the values the network computed at construction (transformers' loader replaces them with
        uninitialised tensors, since they are not in the weights file)."""
        for key, value in self._buffer_snapshot.items():
            path, _, attr = key.rpartition(".")
            owner = self.get_submodule(path) if path else self
            owner._buffers[attr] = value.to(device=owner._buffers[attr].device).clone()

    # ------------------------------------------------------------------ forward
    def _call(self, inputs: torch.Tensor, fields: dict[str, torch.Tensor]) -> Any:
        kwargs = {k: fields[k] for k in self.keywords if k in fields}
        attention_mask = fields.get("attention_mask")
        if self.graph_node is not None:
            return self.module(inputs, **kwargs)[self.graph_node]
        if self.recurrent and attention_mask is not None:
            return self._call_packed(inputs, attention_mask)
        if self.hook_layer is None:
            return self.module(inputs, **kwargs)
        captured: list[Any] = []

        def stop(_module: nn.Module, _args: Any, output: Any) -> None:
            captured.append(output)
            raise _FeatureLayerReached  # the layers after it would compute nothing the encoder uses

        handle = self.module.get_submodule(self.hook_layer).register_forward_hook(stop)
        try:
            self.module(inputs, **kwargs)
        except _FeatureLayerReached:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ValueError(f"modality '{self.modality}': `feature_layer` '{self.hook_layer}' did not run")
        return captured[0]

    def _call_packed(self, inputs: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.bool()
        lengths = mask.sum(dim=1)
        positions = torch.arange(mask.shape[1], device=mask.device)
        if not torch.equal(mask, positions.unsqueeze(0) < lengths.unsqueeze(1)) or bool((lengths == 0).any()):
            raise ValueError(
                f"modality '{self.modality}': a recurrent module needs right-padded sequences with at least one "
                "valid step (attention_mask 1...1 0...0)"
            )
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output = self.module(packed)
        output = output[0] if isinstance(output, tuple) else output
        return pad_packed_sequence(output, batch_first=True, total_length=inputs.shape[1])[0]

    def forward(self, fields: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        main = get_kind(self.kind).module_fields[0][0]
        attention_mask = fields.get("attention_mask")
        output = self._call(fields[main], fields)
        if isinstance(output, (tuple, list)):
            output = output[0]
        if not isinstance(output, torch.Tensor):
            raise ValueError(
                f"modality '{self.modality}': the module returned {type(output).__name__}; an encoder must return "
                "a tensor (or a tuple whose first element is one)"
            )
        if output.dim() == 4:  # CNN feature map [B, C, H, W] -> tokens [B, H*W, C]
            output = output.flatten(2).transpose(1, 2)
        if output.dim() == 2:
            return output, None
        if output.dim() != 3:
            raise ValueError(
                f"modality '{self.modality}': module output of shape {tuple(output.shape)}; expected [B, D], "
                "[B, T, D] or [B, C, H, W]"
            )
        if attention_mask is None or output.shape[1] != attention_mask.shape[1]:
            if attention_mask is not None and not bool(attention_mask.bool().all()):
                raise ValueError(
                    f"modality '{self.modality}': the module returns {output.shape[1]} steps for "
                    f"{attention_mask.shape[1]} input steps, so padding cannot be masked; pool inside the module "
                    "(return [B, D]) or keep one output step per input step"
                )
            return output, None
        return output, attention_mask.bool()


# ---------------------------------------------------------------------------------------------- building
def _device_for_build() -> contextlib.AbstractContextManager:
    """Build on the CPU even inside transformers' meta-device context: non-persistent buffers (not in the
    weights file) keep real values, and the output width can be measured."""
    return torch.device("cpu") if torch.get_default_device().type == "meta" else contextlib.nullcontext()


def _example_inputs(name: str, spec: ModalitySpec, network: nn.Module) -> dict[str, torch.Tensor]:
    return get_kind(spec.kind).module_example_inputs(name, spec, network)


def measure_output(name: str, spec: ModalitySpec, encoder: ModuleEncoder) -> None:
    """Fill ``output_dim`` and the default ``pooling`` of a spec by running the encoder once on a small zero
    batch (only when the spec does not record them yet, i.e. when the model is first built)."""
    if spec.output_dim is not None:
        return
    param = next(encoder.parameters(), None)
    inputs = _example_inputs(name, spec, encoder.module)
    if param is not None:
        inputs = {
            k: v.to(param.device, param.dtype if v.is_floating_point() else v.dtype)
            for k, v in inputs.items()
        }
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        hidden, _ = encoder(inputs)
    encoder.train(was_training)
    spec.output_dim = int(hidden.shape[-1])
    if hidden.dim() == 2:
        if spec.pooling is not None:
            raise ValueError(
                f"modality '{name}': the module's output is already pooled ({tuple(hidden.shape)}); `pooling` "
                f"'{spec.pooling}' does not apply (pick a `feature_layer` with tokens, or drop `pooling`)"
            )
        return
    recurrent = any(isinstance(m, nn.RNNBase) for m in encoder.module.modules())
    spec.pooling = spec.pooling or ("last" if recurrent else get_kind(spec.kind).sequence_pooling)


def build_module_encoder(
    name: str, spec: ModalitySpec, network: nn.Module | None = None, load_weights: bool = False
) -> ModuleEncoder:
    """The [`ModuleEncoder`] of modality ``name``: ``network`` as given, or built from the spec's import path.

    With ``load_weights`` the spec's ``weights`` file is loaded strictly into the full network before
    ``feature_layer`` is applied (``from_encoders``); when a saved model is reloaded its own weights file fills
    the encoder instead. Fills ``output_dim``/``pooling`` in ``spec`` when missing.
    """
    if isinstance(network, ModuleEncoder):
        return network
    loading = torch.get_default_device().type == "meta"  # inside from_pretrained: the checkpoint fills it
    with _device_for_build():
        if network is None:
            network = instantiate(name, spec)
        if load_weights and spec.network.weights is not None:
            load_weights_strictly(name, network, spec.network.weights)
        encoder = ModuleEncoder(network, spec.kind, spec.network.feature_layer, modality=name)
        measure_output(name, spec, encoder)
    if (
        not loading
    ):  # pretrained or the network's own init: never re-initialised by ``post_init``. (When loading,
        for tensor in (*encoder.parameters(), *encoder.buffers()):  # the flag would hide missing keys.)
            tensor._is_hf_initialized = True
        for sub in encoder.modules():
            sub._is_hf_initialized = True
    return encoder


# ---------------------------------------------------------------------------------------------- layout
def _children_with_parameters(module: nn.Module, prefix: str) -> list[tuple[str, list[str]]]:
    return [
        (child, [f"{prefix}{child}.{n}" for n, _ in sub.named_parameters()])
        for child, sub in module.named_children()
        if any(True for _ in sub.parameters())
    ]


def _unused_after(encoder: ModuleEncoder) -> list[str]:
    """Parameters of modules registered after the hooked ``feature_layer`` on its path (they never feed it)."""
    if encoder.hook_layer is None:
        return []
    unused, module, prefix = [], encoder.module, "module."
    for part in encoder.hook_layer.split("."):
        names = [n for n, _ in module.named_children()]
        for later in names[names.index(part) + 1 :]:
            unused += [f"{prefix}{later}.{n}" for n, _ in module.get_submodule(later).named_parameters()]
        module, prefix = module.get_submodule(part), f"{prefix}{part}."
    return unused


def module_layout(name: str, encoder: ModuleEncoder, spec: ModalitySpec) -> EncoderLayout:
    """Blocks of a module encoder: its top-level children that hold parameters, in order (or the children of the
    list named by ``blocks``, with what runs before it as embeddings and after it as the final part); the
    parameters of ``trainable_modules`` always train; modules after a hooked ``feature_layer`` never do."""
    layout = EncoderLayout(unused=_unused_after(encoder))
    params = {n for n, _ in encoder.named_parameters()}
    if spec.network.blocks is None:
        layout.blocks = [names for _, names in _children_with_parameters(encoder.module, "module.")]
        layout.embeddings = sorted(
            params - {n for b in layout.blocks for n in b}
        )  # the network's own parameters
    else:
        try:
            block_list = encoder.module.get_submodule(spec.network.blocks)
        except AttributeError:
            children = [c for c, _ in encoder.module.named_children()]
            raise ValueError(
                f"modality '{name}': `blocks` '{spec.network.blocks}' is not a submodule; top-level children: {children}"
            ) from None
        prefix = f"module.{spec.network.blocks}."
        layout.blocks = [names for _, names in _children_with_parameters(block_list, prefix)]
        order = [n for n, _ in encoder.named_parameters()]
        first = min(order.index(n) for b in layout.blocks for n in b) if layout.blocks else len(order)
        for n in order:
            if not n.startswith(prefix):
                (layout.embeddings if order.index(n) < first else layout.final).append(n)
    unused = set(layout.unused)
    layout.blocks = [[n for n in b if n not in unused] for b in layout.blocks]
    layout.blocks = [b for b in layout.blocks if b]
    layout.embeddings = [n for n in layout.embeddings if n not in unused]
    layout.final = [n for n in layout.final if n not in unused]
    for module_name in spec.network.trainable_modules:
        owned = [n for n in params if n == f"module.{module_name}" or n.startswith(f"module.{module_name}.")]
        if not owned:
            children = [c for c, _ in encoder.module.named_children()]
            raise ValueError(
                f"modality '{name}': `trainable_modules` entry '{module_name}' names no submodule with parameters "
                f"(top-level children: {children})"
            )
        layout.always_trainable += sorted(owned)
    return layout


def finish_module_encoders(encoders: Mapping[str, nn.Module], info: Mapping[str, Any]) -> None:
    """After ``FusionModel.from_pretrained`` (``info``: its loading info): every weight of a module encoder comes
    from the checkpoint (a network passed back with ``encoders=`` that does not match is an error, not a silently
    re-initialised encoder); non-persistent buffers get back the values the network computed at construction.

    Raises:
        ValueError: naming the modality and the missing / unexpected keys.
    """
    for name, encoder in encoders.items():
        if not isinstance(encoder, ModuleEncoder):
            continue
        prefix = f"encoders.{name}."
        missing = sorted(k for k in info.get("missing_keys", ()) if k.startswith(prefix))
        unexpected = sorted(k for k in info.get("unexpected_keys", ()) if k.startswith(prefix))
        if missing or unexpected:
            raise ValueError(
                f"modality '{name}': the module does not match the saved one: missing keys {missing[:10]}, "
                f"unexpected keys {unexpected[:10]}"
            )
        encoder.restore_non_persistent_buffers()
        # own memory: tensors left in the mmapped file are misaligned, and some CPU kernels (LSTM) then round
        # differently
        with torch.no_grad():
            for tensor in (*encoder.parameters(), *encoder.buffers()):
                tensor.data = tensor.data.clone()
