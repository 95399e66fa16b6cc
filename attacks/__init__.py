"""Attacks adapted to patch-wise label flipping, the threat model and the attack registry."""
from robustad.attacks.attack import Attack, frozen, keep_best
from robustad.attacks.calibration import UnitCalibration
from robustad.attacks.objectives import AttackObjective, FlipLoss, Objective, flip_loss, patch_targets
from robustad.attacks.registry import ATTACKS, create_attack, register_attack
from robustad.attacks.threat_model import Norm, ThreatModel, ThreatModelViolation, check_inside, parse_eps, project

# Registered attacks (explicit imports fill the registry).
from robustad.attacks import fgsm, pgd  # noqa: E402,F401  isort: skip
from robustad.attacks import apgd, autoattack, sea, segpgd, square  # noqa: E402,F401  isort: skip
from robustad.attacks import a3, caa, simba  # noqa: E402,F401  isort: skip

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackObjective",
    "FlipLoss",
    "Norm",
    "Objective",
    "ThreatModel",
    "ThreatModelViolation",
    "UnitCalibration",
    "check_inside",
    "create_attack",
    "flip_loss",
    "frozen",
    "keep_best",
    "parse_eps",
    "patch_targets",
    "project",
    "register_attack",
]
