"""`bench check`: is an evaluation sound? (docs/design.md, "Evaluation must be sound")

Runs a battery of checks on one detector, prepared as `bench run` prepares it (`prepare`: the same
checkpoint, or the weights the user gave, under the same lease), and
reports each as pass / fail / skipped with its figures:

- every attack stays inside the ε-ball and [0, 1];
- more PGD steps (steps/5, steps, 5·steps), or more restarts, never give a higher adversarial
  AUROC than fewer (beyond `margin` points);
- AUROC does not rise as ε grows, and it collapses at a large ε;
- the same method trained without adversarial training collapses (when its config has `adv_train`);
- the black-box attack (SimBA) is not stronger than white-box PGD (else: gradient masking);
- input gradients are non-zero and finite; the detector is deterministic;
- the attack (`--attack`, default PGD) is as strong on the detector with logits a·M + c
  (shifted by 10 of the clean logits' spreads, and scaled by 0.1) as on M itself (docs/design.md: an
  attack's strength must not change with the scale and offset of the logits);
- every composite (`worst:`, AutoAttack) is at least as strong as each of its members on every
  image: it is a per-image worst case, so no member may reach a higher flip loss on any image.

The AUROC checked is the one the objective targets: pixel AUROC for localization, image AUROC for
detection (or when the dataset has no masks).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustad.attacks import ThreatModelViolation, create_attack
from robustad.attacks.registry import takes_default_steps
from robustad.attacks.worst_case import member_label
from robustad.bench.cells import CellSpec
from robustad.bench.evaluation.affine_logits import AffineLogits
from robustad.bench.evaluation.checks import cheap_checks
from robustad.bench.evaluation.evaluate import evaluate
from robustad.bench.evaluation.group import RANDOMIZED_EVALUATIONS
from robustad.bench.evaluation.prepare import prepare
from robustad.bench.results.records import write_json_atomic

COLLAPSE_BELOW = 30.0  # AUROC (%) under which a model counts as collapsed
MASKED_SHARE = 0.05  # images whose input gradient may be zero or non-finite before masking is flagged
SUCCESS_DROP = 10.0  # AUROC points PGD must take off a randomized detector with its noise fixed
EOT_LADDER = (1, 5, 20)  # EOT passes compared for a randomized detector (AutoAttack's rand version uses 20)
SETTLE_POINTS = 2.0  # AUROC points within which EOT-20 and EOT-5 count as settled
COMPOSITE_NOISE_Z = 3.0  # standard errors of a randomized detector's loss difference that count as noise


@dataclasses.dataclass
class CheckResult:
    name: str
    passed: bool | None  # None: skipped
    figures: dict[str, Any]
    detail: str = ""

    @property
    def status(self) -> str:
        return "skip" if self.passed is None else ("PASS" if self.passed else "FAIL")


class SoundnessCheck:
    """Holds one trained detector and its test images; each method runs one check."""

    def __init__(self, spec: CellSpec, *, results="results", device="cpu", max_images: int = 32,
                 margin: float = 1.0, eot: int | None = None, log=print):
        """`eot`: EOT passes of every attack of the checks that does not set its own (default: the
        attacks' default, 20 for a randomized detector); the EOT ladder keeps its own K."""
        self.spec = spec
        self.eot = eot
        self.attack_name = spec.attack  # the attack of the invariance and composite checks
        self.results = Path(results).expanduser().resolve()
        self.device = torch.device(device)
        self.margin = margin
        self.log = log
        self.prepared = prepare(spec, results=self.results, device=device, log=log)
        self.detector, self.test_set = self.prepared.detector, self.prepared.test_set
        self.max_images = max_images
        self.metric = ("pixel_auroc" if spec.objective == "localization" and self.test_set.has_masks
                       and self.detector.localizes else "image_auroc")
        self.steps = spec.resolved_steps() or 10

    def build_attack(self, attack_name: str, **options):
        options = {"norm": self.spec.norm, "eps": self.spec.eps, "seed": self.spec.seed,
                   "objective": self.spec.objective, **({"eot": self.eot} if self.eot else {}), **options}
        return create_attack(attack_name, **options)

    def evaluation(self, attack_name: str, detector=None, **options) -> dict:
        """The runner's `evaluate` of one attack configuration on the checked test images (a randomized
        detector's AUROC the mean of `RANDOMIZED_EVALUATIONS` passes, as the runner records it)."""
        detector = detector or self.detector
        return evaluate(detector, self.test_set, self.build_attack(attack_name, **options), batch_size=16,
                        device=self.device, max_images=self.max_images, progress=False,
                        evaluations=RANDOMIZED_EVALUATIONS if getattr(detector, "randomized", False) else 1)

    def adversarial(self, attack_name: str, detector=None, **options) -> tuple[float, float]:
        """(clean, adversarial) AUROC of the checked metric under one attack configuration."""
        out = self.evaluation(attack_name, detector, **options)
        return out["clean"][self.metric], out["adversarial"][self.metric]

    # -- the checks --------------------------------------------------------------------------
    def inside_threat_model(self, attacks=("fgsm", "pgd", "simba")) -> CheckResult:
        figures, failures = {}, []
        for name in attacks:
            try:
                figures[name] = round(self.adversarial(name, steps=None if name == "fgsm" else self.steps)[1], 2)
            except ThreatModelViolation as err:
                failures.append(f"{name}: {err}")
            except KeyError:
                figures[name] = "not registered"
        return CheckResult("inside_threat_model", not failures, figures, "; ".join(failures))

    def more_steps_not_weaker(self) -> CheckResult:
        """PGD-{steps/5}, PGD-{steps}, PGD-{5·steps}: each no weaker than the one before (± margin).

        PGD's default step 2.5·ε/steps shrinks as the steps grow, so more steps are not stronger
        by construction; the third rung catches a protocol (e.g. PGD-1000) weaker than a shorter one.
        """
        ladder = [max(1, self.steps // 5), self.steps, 5 * self.steps]
        values = [self.adversarial("pgd", steps=n)[1] for n in ladder]
        passed = all(b <= a + self.margin for a, b in zip(values, values[1:]))
        figures = {f"pgd-{n}": round(v, 2) for n, v in zip(ladder, values)}
        return CheckResult("more_steps_not_weaker", passed, figures,
                           "" if passed else "more steps gave a higher AUROC: report the worst case "
                                             "(worst:pgd-N,pgd-M) or a stronger attack (apgd)")

    def more_restarts_not_weaker(self) -> CheckResult:
        a = self.adversarial("pgd", steps=self.steps, random_start=True, restarts=1)[1]
        b = self.adversarial("pgd", steps=self.steps, random_start=True, restarts=3)[1]
        return CheckResult("more_restarts_not_weaker", b <= a + self.margin, {"restarts=1": round(a, 2), "restarts=3": round(b, 2)})

    def eps_monotone_and_collapse(self) -> list[CheckResult]:
        eps = self.spec.eps
        grid = [0.0, eps / 2, eps, 2 * eps, 8 * eps]
        values = [self.adversarial("pgd", steps=self.steps, eps=e)[1] for e in grid]
        figures = {f"eps={e * 255:.1f}/255": round(v, 2) for e, v in zip(grid, values)}
        monotone = all(b <= a + self.margin for a, b in zip(values, values[1:]))
        return [
            CheckResult("auroc_falls_with_eps", monotone, figures),
            CheckResult("collapses_at_large_eps", values[-1] < COLLAPSE_BELOW,
                        {f"eps={grid[-1] * 255:.1f}/255": round(values[-1], 2), "threshold": COLLAPSE_BELOW}),
        ]

    def undefended_spec(self) -> CellSpec | None:
        """The same cell without adversarial training: `adv_train=false`, or `<m>` for a method `<m>-adv`."""
        from robustad.methods import METHODS

        if "adv_train" in self.detector.config_dict():
            overrides = {**self.spec.config_overrides, "adv_train": False}
            return dataclasses.replace(self.spec, config=tuple(sorted(overrides.items())))
        base = self.spec.method.removesuffix("-adv")
        if base == self.spec.method or base not in METHODS.names():
            return None
        fields = {f.name for f in dataclasses.fields(METHODS.get(base).config_class)}
        overrides = {k: v for k, v in self.spec.config_overrides.items() if k in fields}
        return dataclasses.replace(self.spec, method=base, config=tuple(sorted(overrides.items())))

    def undefended_collapses(self) -> CheckResult:
        if self.detector.given_weights is not None:
            return CheckResult("undefended_collapses", None, {},
                               "the detector holds given weights; its undefended twin would have to be trained")
        spec = self.undefended_spec()
        if spec is None:
            return CheckResult("undefended_collapses", None, {},
                               "the method has no adv_train field and no clean <method> beside <method>-adv")
        with prepare(spec, results=self.results, device=str(self.device), log=self.log) as undefended:
            clean, adv = self.adversarial("pgd", detector=undefended.detector, steps=self.steps)
        return CheckResult("undefended_collapses", adv < COLLAPSE_BELOW,
                           {"method": spec.method, "clean": round(clean, 2), "adversarial": round(adv, 2),
                            "threshold": COLLAPSE_BELOW})

    def blackbox_not_stronger(self) -> CheckResult:
        try:
            black = self.adversarial("simba", steps=max(100, self.steps * 10))[1]
        except KeyError:
            return CheckResult("blackbox_not_stronger", None, {}, "simba is not registered")
        white = self.adversarial("pgd", steps=self.steps)[1]
        return CheckResult("blackbox_not_stronger", black >= white - self.margin,
                           {"simba": round(black, 2), "pgd": round(white, 2)},
                           "" if black >= white - self.margin else "black-box beats white-box: gradient masking?")

    def attack_steps_options(self, attack_name: str) -> dict:
        """`steps` for an attack that takes the checks' iterations (not one with `-N`, FGSM or a query budget)."""
        return {"steps": self.steps} if takes_default_steps(attack_name) else {}

    def logit_shift_invariance(self, attack_name: str | None = None) -> CheckResult:
        """The attack on M, on M + c (c = 10 spreads of the clean logits) and on 0.1·M: AUROC cannot tell
        them apart, so neither may a sound attack (beyond `margin` points)."""
        name = attack_name or self.attack_name
        options = self.attack_steps_options(name)
        plain = self.evaluation(name, **options)
        shift = 10.0 * plain["calibration"]["scale"]
        values = {"plain": plain["adversarial"][self.metric]}
        for label, (scale, offset) in {f"shift+{shift:.3g}": (1.0, shift), "scale*0.1": (0.1, 0.0)}.items():
            values[label] = self.evaluation(name, AffineLogits(self.detector, scale=scale, shift=offset),
                                            **options)["adversarial"][self.metric]
        spread = max(values.values()) - min(values.values())
        passed = spread <= self.margin
        return CheckResult("logit_shift_invariance", passed,
                           {"attack": name, **{k: round(v, 2) for k, v in values.items()}, "spread": round(spread, 2)},
                           "" if passed else "the attack's strength depends on the logits' offset or scale: a two-class "
                                             "reading or threshold that is not calibrated on the test set?")

    def composite_attacks(self) -> list[str]:
        """The composites to check: the checked attack when it is one, else `worst:pgd-{steps/5},pgd-{steps}`
        and AutoAttack (`steps` iterations, 100 Square queries)."""
        if self.attack_name.startswith("worst:") or self.attack_name.split("-")[0] == "autoattack":
            return [self.attack_name]
        return [f"worst:pgd-{max(1, self.steps // 5)},pgd-{self.steps}", f"autoattack-{self.steps}"]

    def composites_not_weaker(self) -> CheckResult:
        """Per image: the composite's flip loss is at least each member's (it keeps the worst case).

        A randomized detector's losses are read as the mean of `RANDOMIZED_EOT` passes per image, and a
        member counts as stronger only beyond `COMPOSITE_NOISE_Z` standard errors of the difference: the
        composite chose between its members on K-pass means (its EOT), so members closer than that
        noise cannot be ranked by it."""
        from robustad.attacks.attack import RANDOMIZED_EOT, default_eot, frozen
        from robustad.attacks.batching import attack_in_chunks
        from robustad.attacks.calibration import UnitCalibration
        from robustad.attacks.objectives import AttackObjective, FlipLoss, unit_targets

        images, masks, labels = self.test_tensors()
        figures, failures = {}, []
        for name in self.composite_attacks():
            options = self.attack_steps_options(name)
            if name.split("-")[0] == "autoattack":
                options["square_queries"] = 100
            composite = self.build_attack(name, **options)
            with frozen(self.detector), torch.no_grad():
                logits = self.detector(images)
                units = self.detector.score(logits).view(-1, 1) if composite.objective.value == "detection" else logits.flatten(1)
                targets = unit_targets(masks, labels, tuple(logits.shape[-2:]), composite.objective)
                calibration = UnitCalibration.from_units(units, targets, composite.objective)
                ranking = AttackObjective.build(self.detector, images, masks, labels, composite.objective,
                                                FlipLoss.MARGIN, calibration)
            members = composite.members if hasattr(composite, "members") else []
            members = [(m if isinstance(m, tuple) else (member_label(m), m)) for m in members]

            randomized = bool(getattr(self.detector, "randomized", False))
            readings = RANDOMIZED_EOT if randomized else 1
            chosen_on = (getattr(composite, "eot", None) or (members and getattr(members[0][1], "eot", None))
                         or default_eot(self.detector))  # passes behind the composite's per-image choice

            def loss_of(attack):
                adv = attack_in_chunks(attack, self.detector, images, masks, labels, calibration=calibration)
                with frozen(self.detector), torch.no_grad():
                    values = torch.stack([ranking.loss(adv) for _ in range(readings)])
                return values.mean(0), (values.var(0) if readings > 1 else torch.zeros_like(values[0]))

            combined, combined_var = loss_of(composite)
            for label, member in members:
                alone, alone_var = loss_of(member)
                gap = alone - combined  # > 0 where the member alone is stronger on that image
                noise = ((alone_var + combined_var) * (1.0 / chosen_on + 1.0 / readings)).sqrt()
                tolerance = 1e-4 * (1.0 + alone.abs()) + COMPOSITE_NOISE_Z * noise
                beaten = int((gap > tolerance).sum())
                figures[f"{name} vs {label}"] = f"{beaten}/{len(gap)} images stronger alone, max gap {float(gap.max()):.3g}"
                if beaten:
                    failures.append(f"{label} beats {name} on {beaten} image(s)")
        return CheckResult("composites_not_weaker_per_image", not failures, figures, "; ".join(failures))

    def test_tensors(self):
        """The checked test images, masks and labels as tensors (the runner's even spread when capped)."""
        indices = list(range(len(self.test_set)))
        if self.max_images is not None and len(indices) > self.max_images:
            indices = [indices[int(i)] for i in np.linspace(0, len(indices) - 1, self.max_images).round()]
        items = [self.test_set[i] for i in indices]
        return (torch.stack([b["image"] for b in items]).to(self.device),
                torch.stack([b["mask"] for b in items]).to(self.device),
                torch.tensor([float(b["label"]) for b in items], device=self.device))

    def gradients_and_determinism(self) -> list[CheckResult]:
        """Input gradients on the checked images (zero or non-finite on more than MASKED_SHARE of them:
        masking), and whether two identical forward passes agree, as the detector declares."""
        images, masks, _ = self.test_tensors()
        c = cheap_checks(self.detector, images, masks)
        masked = c["masked_gradient_fraction"]
        declared = bool(getattr(self.detector, "randomized", False))
        if declared:
            randomness = CheckResult("randomness_declared", c["randomized"],
                                     {"forward_max_difference": c["forward_max_difference"]},
                                     "" if c["randomized"] else "declared randomized, but two passes agree")
        else:
            randomness = CheckResult("deterministic", not c["randomized"],
                                     {"forward_max_difference": c["forward_max_difference"]},
                                     "" if not c["randomized"] else "two identical passes differ: declare "
                                     "randomized = True so that attacks use EOT and evaluations are repeated")
        return [
            CheckResult("input_gradients_not_masked", masked <= MASKED_SHARE,
                        {"masked_gradient_fraction": round(masked, 3), "threshold": MASKED_SHARE,
                         "finite": c["gradient_finite"]},
                        "" if masked <= MASKED_SHARE else "zero or non-finite input gradients: gradient masking, a "
                        "no_grad/detach in the scoring path, or a non-differentiable step (wrap it in "
                        "NonDifferentiable and attack with bpda=true)"),
            randomness,
        ]

    def noise_baseline(self) -> CheckResult:
        """PGD against random noise on the ε-ball's surface (signs of Gaussian noise times ε under L∞, a
        random direction of length ε under L2): an attack weaker than noise is broken."""
        pgd = self.adversarial("pgd", steps=self.steps)[1]
        images, masks, labels = self.test_tensors()
        generator = torch.Generator().manual_seed(self.spec.seed)
        direction = torch.randn(images.shape, generator=generator).to(images)
        if self.spec.norm == "linf":
            step = self.spec.eps * direction.sign()
        else:
            step = self.spec.eps * direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        noise = scored_metric(self.detector, images, (images + step).clamp(0, 1), masks, labels, self.metric)
        passed = pgd <= noise + self.margin
        return CheckResult("stronger_than_noise", passed, {"pgd": round(pgd, 2), "random_noise": round(noise, 2)},
                           "" if passed else "PGD is weaker than random noise of the same budget: the attack is "
                                             "broken or the gradients mislead it")

    def transfer_from_undefended(self) -> CheckResult:
        """Adversarial images crafted on the undefended twin, scored by the detector: a transfer attack
        stronger than the white-box one means the white-box gradients are masked."""
        spec = None if self.detector.given_weights is not None else self.undefended_spec()
        if spec is None:
            return CheckResult("whitebox_not_weaker_than_transfer", None, {}, "no undefended twin to transfer from")
        white = self.adversarial("pgd", steps=self.steps)[1]
        with prepare(spec, results=self.results, device=str(self.device), log=self.log) as undefended:
            images, masks, labels = self.test_tensors()
            attack = self.build_attack("pgd", steps=self.steps)
            transferred = attack(undefended.detector, images, masks, labels)
        metric = scored_metric(self.detector, images, transferred, masks, labels, self.metric)
        passed = white <= metric + self.margin
        return CheckResult("whitebox_not_weaker_than_transfer", passed,
                           {"white_box_pgd": round(white, 2), "transfer_from_undefended": round(metric, 2)},
                           "" if passed else "the undefended twin's adversarial images hurt more than the white-box "
                                             "attack: gradient masking?")

    def fixed_randomness_succeeds(self) -> CheckResult:
        """A randomized detector with its noise fixed (the same draws at every call) is attacked without
        EOT: the attack must succeed, else the robustness is not the randomness's doing."""
        fixed = FixedRandomness(self.detector, seed=self.spec.seed)
        clean, adv = self.adversarial("pgd", detector=fixed, steps=self.steps, eot=1)
        passed = adv <= clean - SUCCESS_DROP
        return CheckResult("attack_succeeds_with_randomness_fixed", passed,
                           {"clean": round(clean, 2), "adversarial": round(adv, 2), "required_drop": SUCCESS_DROP},
                           "" if passed else "even with its noise fixed the detector resists PGD: its robustness "
                                             "does not come from the randomness alone")

    def eot_settles(self) -> CheckResult:
        """PGD with EOT over K = 1, 5, 20 passes: the adversarial AUROC must settle as K grows."""
        values = {k: self.adversarial("pgd", steps=self.steps, eot=k)[1] for k in EOT_LADDER}
        last, before = values[EOT_LADDER[-1]], values[EOT_LADDER[-2]]
        passed = abs(last - before) <= SETTLE_POINTS
        return CheckResult("eot_settles", passed, {f"eot={k}": round(v, 2) for k, v in values.items()},
                           "" if passed else f"EOT-{EOT_LADDER[-1]} and EOT-{EOT_LADDER[-2]} differ by more than "
                                             f"{SETTLE_POINTS} points: use a larger eot")

    def run_all(self) -> list[CheckResult]:
        results = [*self.gradients_and_determinism(), self.inside_threat_model(), self.more_steps_not_weaker(),
                   self.more_restarts_not_weaker(), *self.eps_monotone_and_collapse(), self.undefended_collapses(),
                   self.blackbox_not_stronger(), self.noise_baseline(), self.transfer_from_undefended(),
                   self.logit_shift_invariance(), self.composites_not_weaker()]
        if getattr(self.detector, "randomized", False):
            results += [self.fixed_randomness_succeeds(), self.eot_settles()]
        return results


class FixedRandomness(torch.nn.Module):
    """A randomized detector whose every call draws the same numbers (torch's generators reseeded inside
    a forked state): what it would be without its randomness. Scores and maps are the detector's own."""

    def __init__(self, detector, seed: int = 0):
        super().__init__()
        self.detector, self.seed = detector, seed
        self.image_size, self.localizes, self.randomized = detector.image_size, detector.localizes, False

    def forward(self, images):
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            return self.detector(images)

    def score(self, logits):
        return self.detector.score(logits)

    def anomaly_map(self, logits, size):
        return self.detector.anomaly_map(logits, size)


def scored_metric(detector, clean, adversarial, masks, labels, metric: str) -> float:
    """`metric` (image_auroc or pixel_auroc, %) of the detector on `adversarial` images."""
    from robustad.bench.evaluation.metrics import image_auroc, pixel_auroc

    with torch.no_grad():
        logits = detector(adversarial)
        if metric == "image_auroc":
            return image_auroc(labels.cpu().numpy(), detector.score(logits).float().cpu().numpy())
        maps = detector.anomaly_map(logits.float(), clean.shape[-1]).cpu().numpy()
    return pixel_auroc(masks[:, 0].cpu().numpy(), maps)


def format_report(spec: CellSpec, metric: str, results: list[CheckResult]) -> str:
    lines = [f"soundness checks: {spec.method} on {spec.dataset}/{spec.category}, {spec.norm} eps {spec.eps_text}, "
             f"objective {spec.objective} ({metric} in %)"]
    width = max(len(r.name) for r in results)
    for r in results:
        figures = ", ".join(f"{k} {v}" for k, v in r.figures.items())
        lines.append(f"  {r.status:4}  {r.name.ljust(width)}  {figures}" + (f"  [{r.detail}]" if r.detail else ""))
    failed = sum(r.passed is False for r in results)
    lines.append(f"{sum(r.passed is True for r in results)} passed, {failed} failed, "
                 f"{sum(r.passed is None for r in results)} skipped")
    return "\n".join(lines)


def run_soundness(spec: CellSpec, *, results="results", device="cpu", max_images=32, margin=1.0, eot=None,
                  log=print):
    """Runs every check, writes `<results>/checks/<cell_id>.json` and returns (results, report text)."""
    check = SoundnessCheck(spec, results=results, device=device, max_images=max_images, margin=margin, eot=eot,
                           log=log)
    with check.prepared:
        outcome = check.run_all()
    report = format_report(spec, check.metric, outcome)
    write_json_atomic(Path(results).expanduser().resolve() / "checks" / f"{spec.cell_id()}.json",
                      {"cell_id": spec.cell_id(), "metric": check.metric, "margin": margin,
                       "checks": [dataclasses.asdict(r) | {"status": r.status} for r in outcome]})
    return outcome, report
