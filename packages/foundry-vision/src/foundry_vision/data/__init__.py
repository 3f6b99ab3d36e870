"""Image-caption data: WebDataset shards + manifest, read unchanged."""
