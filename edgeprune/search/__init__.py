"""Policy: the search space, agents that propose candidates, and the run store."""
