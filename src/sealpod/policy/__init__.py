"""sealpod.policy: the appraisal policy model and its pure evaluation.

``Policy.from_toml(text)`` / ``Policy.from_json(text)`` load a policy (unknown keys fail closed);
``evaluate(policy, claims)`` returns every :class:`Violation`; ``enforce`` raises
:class:`~sealpod.errors.PolicyViolation` carrying them.
"""

from sealpod.policy.evaluate import Code, Violation, enforce, evaluate
from sealpod.policy.model import MinTcb, Policy, SnpPolicy

__all__ = ["Code", "MinTcb", "Policy", "SnpPolicy", "Violation", "enforce", "evaluate"]
