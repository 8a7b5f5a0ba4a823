"""The model layer: every file ``save_pretrained`` copies next to the weights as remote code (flat, importing only
each other relatively, torch, transformers, timm, huggingface_hub, safetensors; the processing files also numpy,
PIL and the audio decoders). Nothing here imports from the rest of the package."""
