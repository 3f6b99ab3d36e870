"""Reports of a comparison: posterior violin plots (PNG) and a self-contained HTML page."""
