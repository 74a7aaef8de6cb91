"""The worker: ``AgentServer`` and ``JobRequest``."""
