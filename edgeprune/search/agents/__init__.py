"""Search agents behind one interface; each module registers itself in ``AGENTS``."""

from edgeprune.search.agents.base import AGENTS, Agent, make_agent

__all__ = ["AGENTS", "Agent", "make_agent"]
