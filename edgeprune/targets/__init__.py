"""Target profiles: one TOML file per device, shipped in the package (``edgeprune/targets/profiles/``; the
top-level ``targets`` link points there). ``EDGEPRUNE_TARGETS`` names another folder."""

from edgeprune.targets.profile import TargetProfile, list_targets, load_target, targets_dir

__all__ = ["TargetProfile", "list_targets", "load_target", "targets_dir"]
