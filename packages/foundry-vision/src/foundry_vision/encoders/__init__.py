"""Image encoders: a ViT trained from scratch and Hugging Face vision towers loaded from a local folder."""
