"""Policy serving: our gRPC protocol (``policy.proto``), server, client and the shared per-episode sessions.

See ``packages/foundry-eval/docs/serving.md``.
"""
