"""Search agents behind one interface (``Agent``). Each module of this package, and each plug-in declared
as an ``edgeprune.agents`` entry point, registers its agents itself: there is no list of them here."""

from edgeprune.search.agents.base import (AGENTS, ENTRY_POINT_GROUP, Agent, BaseAgent, agent_info, agent_options,
                                          check_agent, discover, make_agent, register, reset_discovery)

__all__ = ["AGENTS", "ENTRY_POINT_GROUP", "Agent", "BaseAgent", "agent_info", "agent_options", "check_agent",
           "discover", "make_agent", "register", "reset_discovery"]
