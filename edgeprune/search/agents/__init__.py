"""Search agents behind one interface; each module registers itself in ``AGENTS``."""

from edgeprune.search.agents.base import AGENTS, Agent, agent_info, make_agent

__all__ = ["AGENTS", "Agent", "agent_info", "make_agent"]
