"""The main job: toy world → LLM → VLM → VLA (+ baseline) → closed-loop eval → STEP → HTML report."""
