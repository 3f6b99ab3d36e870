"""The main job: toy world → LLM → VLM → VLA (+ the same VLA from scratch) → closed-loop eval → STEP → HTML report."""
