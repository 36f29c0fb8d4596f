"""Target profiles: one TOML file per device under the top-level ``targets/`` folder."""

from edgeprune.targets.profile import TargetProfile, list_targets, load_target

__all__ = ["TargetProfile", "list_targets", "load_target"]
