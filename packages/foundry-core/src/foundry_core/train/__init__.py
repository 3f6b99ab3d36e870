"""The Foundry trainer: one loop for every stage (LLM, VLM, VLA). Entry points live in ``train.run``."""
