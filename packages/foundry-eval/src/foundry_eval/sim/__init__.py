"""Drake tabletop simulation: scene (primitives only), tasks, scripted experts, cameras, demo writer."""
