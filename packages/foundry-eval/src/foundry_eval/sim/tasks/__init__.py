"""The Drake tabletop tasks, one file each (registered as ``env`` components by foundry-eval's plugin)."""
