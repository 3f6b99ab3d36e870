"""Closed-loop evaluation: the rollout runner (``run_rollouts``), baseline policies and a fake simulator."""
