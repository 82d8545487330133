"""The verifier registry: every certificate of a model's L-inf ball, by name.

A verifier is a small object with ``certify(model, x, y, eps) -> Verdicts`` (per sample:
certified or not) and class attributes saying what it is: ``name``, ``norm`` (the ball it
certifies), ``strength`` (the usual order of tightness, higher is tighter; None: not
comparable with the bound family) and ``complete`` (it can also prove a sample unsafe, at a
cost exponential in the network: the final evaluation only). Its options are its dataclass
fields (``Verifier.options()``), e.g. MILP's ``time_limit``. The training config
(``eval.verifier``, ``eval.final_verifier``), ``trainables.evaluation``,
``python -m trainables.certify_checkpoint`` and ``python -m analysis recertify`` all take
their names and ranks from ``VERIFIERS``.

Adding a verifier: one class below (or in its own module) and one line in ``_REGISTERED``;
a cascade stage also goes into ``BEST_STAGES``.

Not here, on purpose: the attacks (``pgd``, ``autoattack``: an upper bound of robust
accuracy, not a certificate) and randomized smoothing (it certifies another classifier, the
smoothed one, at L2 radii and with probability 1 - alpha: ``certify.smoothing``); the
checkpoint CLI offers both beside the registry's verifiers.

Every ``certify`` call runs in full float32 (``precision.full_float32``: no TF32).

torch and the verifiers' code are imported on a verifier's first use, so that reading the
registry (the training config validates names against it, e.g. in ``sweeps validate``)
stays as light as the config itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from trainables.config_fields import did_you_mean

if TYPE_CHECKING:
    from torch import Tensor, nn

    from trainables.certify.exact import Verdict

Norm = Literal["linf", "l2"]

#: The stages of the ``best`` cascade, cheapest first.
BEST_STAGES: tuple[str, ...] = ("ibp", "crown-ibp", "crown", "alpha-crown")
#: Metric prefix of the fraction of samples each cascade stage certified.
STAGE_PREFIX = "cert_by_"


@dataclass(frozen=True)
class Verdicts:
    """One batch's answer.

    ``certified``: bool ``[batch]``, the sample's ball is proven safe. ``counts``: per-batch
    counters the evaluation reports as fractions of the samples (their names are
    ``Verifier.counters()``), e.g. ``milp_undecided``. ``constants``: per-model values, e.g.
    ``lipschitz_constant``. ``certified_by``: for a cascade, the stage that certified each
    sample (None where none did).
    """

    certified: Tensor
    counts: Mapping[str, int] = field(default_factory=dict)
    constants: Mapping[str, float] = field(default_factory=dict)
    certified_by: tuple[str | None, ...] | None = None


class Verifier(ABC):
    """A certificate of ``B(x, eps)`` (L-inf, clipped to [0, 1]) for each sample."""

    name: ClassVar[str]
    norm: ClassVar[Norm] = "linf"
    strength: ClassVar[int | None]
    complete: ClassVar[bool] = False

    def certify(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Verdicts:
        """Per-sample verdicts; runs without TF32, restores the model's mode and the flags."""
        from trainables.certify.precision import full_float32

        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        with full_float32():
            return self._certify(model, x, y, eps)

    @abstractmethod
    def _certify(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Verdicts: ...

    def counters(self) -> tuple[str, ...]:
        """The names of ``Verdicts.counts`` this verifier reports (every batch, all of them)."""
        return ()

    @classmethod
    def options(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]


@dataclass(frozen=True)
class _BoundVerifier(Verifier):
    """Certified iff the lower bound of every margin ``z_y - z_j`` is > 0: ``bounds.certify``
    with the bound method of the verifier's name; its options (dataclass fields, e.g. an
    iteration budget) are passed on as ``compute_bounds`` keyword options."""

    def _certify(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Verdicts:
        from trainables.bounds import certify as bound_certify

        options = {option: getattr(self, option) for option in self.options()}
        return Verdicts(bound_certify(model, x, y, eps, self.name, **options))


@dataclass(frozen=True)
class Ibp(_BoundVerifier):
    name = "ibp"
    strength = 10


@dataclass(frozen=True)
class CrownIbp(_BoundVerifier):
    """IBP intermediate bounds, linear relaxation at the output."""

    name = "crown-ibp"
    strength = 20


@dataclass(frozen=True)
class Crown(_BoundVerifier):
    """Linear relaxation at every layer (intermediate bounds intersected with IBP's)."""

    name = "crown"
    strength = 30


@dataclass(frozen=True)
class AlphaCrown(_BoundVerifier):
    """CROWN with its lower ReLU slopes optimised by projected Adam on the bound
    (``bounds.alpha``): ``alpha_iterations`` bound evaluations at step ``alpha_lr``, the
    intermediate layers' slopes too; sound for any slope in [0, 1], never looser than
    ``crown`` (the best iterate is kept, the first one is CROWN's)."""

    name = "alpha-crown"
    strength = 40
    alpha_iterations: int = 20
    alpha_lr: float = 0.5


@dataclass(frozen=True)
class Lipschitz(Verifier):
    """``margin / (sqrt(2) L) > eps sqrt(d)`` with L a sound global L2 constant
    (``certify.lipschitz``); the only certificate for the 1-Lipschitz ``lip_*`` models."""

    name = "lipschitz"
    strength = None  # another family: neither tighter nor looser than the bounds in general

    def _certify(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Verdicts:
        from trainables.certify.lipschitz import certify_lipschitz, lipschitz_bound

        constant = lipschitz_bound(model, tuple(x.shape[1:]))
        certified = certify_lipschitz(model, x, y, eps, constant)
        return Verdicts(certified, constants={"lipschitz_constant": constant})


@dataclass(frozen=True)
class _CompleteVerifier(Verifier):
    """A complete verifier: verified / falsified / undecided (timeout or unknown) per sample.
    Undecided samples count as not certified; their share is ``<name>_undecided``. Options:
    ``time_limit`` seconds per sample, ``seed`` of its attacks."""

    complete = True
    time_limit: float = 10.0
    seed: int = 0

    @abstractmethod
    def verdicts(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> list[Verdict]: ...

    def counters(self) -> tuple[str, ...]:
        return (f"{self.name}_undecided",)

    def _certify(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Verdicts:
        import torch

        statuses = [verdict.status for verdict in self.verdicts(model, x, y, eps)]
        certified = torch.tensor([s == "verified" for s in statuses], dtype=torch.bool)
        undecided = sum(s not in ("verified", "falsified") for s in statuses)
        return Verdicts(certified.to(x.device), counts={self.counters()[0]: undecided})


@dataclass(frozen=True)
class Milp(_CompleteVerifier):
    """Big-M MILP (scipy HiGHS) after a CROWN + PGD fast path (``certify.exact``); small
    ReLU networks, ``time_limit`` seconds per sample, ``seed`` for the fast path's PGD."""

    name = "milp"
    strength = 100

    def verdicts(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> list[Verdict]:
        from trainables.certify.exact import verify_exact

        return verify_exact(model, x, y, eps, time_limit=self.time_limit, seed=self.seed)


@dataclass(frozen=True)
class Bab(_CompleteVerifier):
    """Branch and bound over ReLU splits with beta-CROWN bounds, PGD on the subproblems and
    exact LP leaves (``certify.bab``): complete; ``time_limit`` seconds per sample. Scales
    beyond the MILP (small CNNs), undecided samples count as not certified."""

    name = "bab"
    strength = 90

    def verdicts(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> list[Verdict]:
        from trainables.certify.bab import verify_bab

        return verify_bab(model, x, y, eps, time_limit=self.time_limit, seed=self.seed)


@dataclass(frozen=True)
class Best(Verifier):
    """The cascade of ``BEST_STAGES``: each stage runs only on the samples still undecided
    (correctly classified and not certified by an earlier stage); a sample is certified when
    any stage certifies it, so ``best`` certifies at least what each stage does. Reports the
    fraction each stage certified, ``cert_by_<stage>`` (they sum to ``cert_acc``), and per
    sample ``Verdicts.certified_by``. CTRAIN's evaluation takes the same union. ``stages``
    (default: the class's ``stage_names`` from the registry) can be given as verifiers."""

    name = "best"
    strength = 50  # above every stage
    stage_names: ClassVar[tuple[str, ...]] = BEST_STAGES
    stages: tuple[Verifier, ...] = ()
    alpha_iterations: int = AlphaCrown.alpha_iterations

    def __post_init__(self) -> None:
        if not self.stages:
            stages = tuple(
                make_verifier(stage, **_taken(stage, {"alpha_iterations": self.alpha_iterations}))
                for stage in self.stage_names
            )
            object.__setattr__(self, "stages", stages)

    def counters(self) -> tuple[str, ...]:
        return tuple(stage_metric(stage.name) for stage in self.stages)

    def _certify(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Verdicts:
        import torch

        from trainables.models.modes import eval_mode

        with torch.no_grad(), eval_mode(model):
            correct = model(x).argmax(dim=1) == y  # a misclassified sample is never certified
        certified = torch.zeros_like(correct)
        by: list[str | None] = [None] * len(y)
        counts = {}
        undecided = correct.nonzero().flatten()
        for stage in self.stages:
            won = torch.zeros(0, dtype=torch.long, device=x.device)
            if len(undecided):
                mask = stage.certify(model, x[undecided], y[undecided], eps).certified
                won, undecided = undecided[mask], undecided[~mask]
            certified[won] = True
            for index in won.tolist():
                by[index] = stage.name
            counts[stage_metric(stage.name)] = len(won)
        return Verdicts(certified, counts=counts, certified_by=tuple(by))


@dataclass(frozen=True)
class BestUntilCrownIbp(Best):
    """``best`` stopped after CROWN-IBP (IBP, then CROWN-IBP on the rest): for networks whose
    full CROWN does not fit the budget, e.g. CNN7 during a CIFAR-10 sweep."""

    name = "best-until-crown-ibp"
    strength = 25  # at least CROWN-IBP; not ordered with CROWN
    stage_names = BEST_STAGES[: BEST_STAGES.index("crown-ibp") + 1]


_REGISTERED: tuple[type[Verifier], ...] = (
    Ibp,
    CrownIbp,
    Crown,
    AlphaCrown,
    Best,
    BestUntilCrownIbp,
    Lipschitz,
    Milp,
    Bab,
)
#: Every verifier by name.
VERIFIERS: dict[str, type[Verifier]] = {verifier.name: verifier for verifier in _REGISTERED}


def verifier_type(name: str) -> type[Verifier]:
    """The registered class of ``name``; an unknown name says which close name it might be."""
    if name not in VERIFIERS:
        raise ValueError(unknown_verifier(name))
    return VERIFIERS[name]


def make_verifier(name: str, **options: Any) -> Verifier:
    """A verifier of ``name`` with ``options`` (only the options that verifier takes)."""
    kind = verifier_type(name)
    unknown = sorted(set(options) - set(kind.options()))
    if unknown:
        takes = ", ".join(kind.options()) or "none"
        raise ValueError(f"verifier {name!r} has no option(s) {unknown}; its options: {takes}")
    return kind(**options)


def make_configured_verifier(name: str, settings: Mapping[str, Any]) -> Verifier:
    """``make_verifier`` with those of ``settings`` (e.g. the run's ``time_limit``, ``seed``,
    ``alpha_iterations``) that the verifier takes; the others are not its business."""
    return make_verifier(name, **_taken(name, settings))


def _taken(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    takes = verifier_type(name).options()
    return {key: value for key, value in settings.items() if key in takes}


def unknown_verifier(name: object) -> str:
    """The error message for a name that is not registered, with a "did you mean"."""
    return (
        f"unknown verifier {name!r}{did_you_mean(name, VERIFIERS)}; known: {', '.join(VERIFIERS)}"
    )


def stage_metric(stage: str) -> str:
    """The metric of the fraction of samples a cascade stage certified: ``cert_by_crown_ibp``."""
    return STAGE_PREFIX + stage.replace("-", "_")


def stage_fractions(metrics: Mapping[str, Any]) -> dict[str, float] | None:
    """``{stage name: fraction certified by it}`` from a cascade's metrics (None if none)."""
    names = {stage_metric(name): name for name in VERIFIERS}
    found = {names[k]: float(v) for k, v in metrics.items() if k in names}
    return found or None
