"""Data: the source contract and helpers (``base``), weighted mixing (``mixer``), built-in sources."""
