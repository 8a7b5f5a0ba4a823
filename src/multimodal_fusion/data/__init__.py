"""The data layer above the model: datasets (``load_fusion_dataset``), the column mapping and the collator."""
