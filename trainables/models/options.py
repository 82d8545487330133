"""Validation of builder options, shared by every architecture module.

Builders raise a plain ``ValueError`` naming the option; ``build_model`` prefixes the model
name, so messages stay specific without each builder knowing its registry name.
"""

from __future__ import annotations


def check_int(option: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int ``>= minimum``; sweeps pass options straight from
    search spaces, so a float or bool here is a configuration mistake worth stopping on."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"option {option!r} must be an int >= {minimum}, got {value!r}")
    return value
