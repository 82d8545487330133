"""Training methods: a registry of small classes, one per ``method.name``.

Each class (``base.Method``) owns its settings as pydantic fields, validated as the
config's ``method`` group (a union discriminated on ``name``, so a setting of another method
is an error naming it), and one ``loss(ctx) -> terms`` on a ``context.StepContext``.

Adding a method: one file in this package with one class (a ``name`` Literal, its settings,
``loss``; ``family`` and the ``uses_*`` needs as class attributes), its entry in
``METHOD_CLASSES`` below, and for sweeps an entry in ``search_spaces/presets/certified.yaml``.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field

from trainables.methods.base import Family, Method
from trainables.methods.cc_ibp import CCIBP
from trainables.methods.crown_ibp import CrownIBP
from trainables.methods.exp_ibp import ExpIBP
from trainables.methods.gaussian import Gaussian
from trainables.methods.ibp import IBP
from trainables.methods.lipschitz import HKR, Hinge
from trainables.methods.mtl_ibp import MTLIBP
from trainables.methods.pgd_at import PGDAT
from trainables.methods.sabr import SABR
from trainables.methods.standard import Standard
from trainables.methods.trades import TRADES

#: The registry, in the order the docs list the methods.
METHOD_CLASSES: tuple[type[Method], ...] = (
    Standard,
    IBP,
    CrownIBP,
    CCIBP,
    MTLIBP,
    ExpIBP,
    SABR,
    PGDAT,
    TRADES,
    Gaussian,
    Hinge,
    HKR,
)
METHODS: dict[str, type[Method]] = {cls.model_fields["name"].default: cls for cls in METHOD_CLASSES}
DEFAULT_METHOD = "cc-ibp"

#: The config's ``method`` group: one of the classes, chosen by ``name``.
MethodSettings = Annotated[Union[METHOD_CLASSES], Field(discriminator="name")]  # noqa: UP007


def method_names(family: Family | None = None) -> tuple[str, ...]:
    """Every method's name, or those of one ``family``."""
    return tuple(name for name, cls in METHODS.items() if family in (None, cls.family))


def method_settings() -> dict[str, tuple[str, ...]]:
    """The settings (fields) of each method, by name."""
    return {name: tuple(cls.model_fields) for name, cls in METHODS.items()}


#: The flat ``method`` group before the registry: a checkpoint written then dumps every one
#: of these fields, whatever its method.
LEGACY_FIELDS = frozenset(
    {
        "name",
        "alpha",
        "sabr_lambda",
        "kappa_start",
        "kappa_end",
        "trades_beta",
        "train_eps_factor",
        "attack_eps_factor",
        "l1",
        "sigma",
        "min_margin",
        "hkr_alpha",
    }
)


def read_method_group(value: Any) -> Any:
    """The ``method`` mapping as the union validates it.

    Without ``name`` it means the default method (``cc-ibp``). A dump of the pre-registry
    flat group (exactly ``LEGACY_FIELDS``, from an older checkpoint's config) keeps only its
    method's settings, so old checkpoints still load for re-certification (its CROWN-IBP
    ``kappa_*`` weights have no counterpart and take today's defaults).
    """
    if not isinstance(value, dict):
        return value
    if "name" not in value:
        return {"name": DEFAULT_METHOD, **value}
    if set(value) == LEGACY_FIELDS and value["name"] in METHODS:
        fields = METHODS[value["name"]].model_fields
        return {key: item for key, item in value.items() if key in fields}
    return value


__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "METHOD_CLASSES",
    "Method",
    "MethodSettings",
    "method_names",
    "method_settings",
    "read_method_group",
]
