"""Growth policies: the protocol, the narrow env interface they use, and the registry.

>>> from growenv.policies import make_policy
>>> make_policy("greedy").name
'greedy'
"""

from growenv.policies.base import Policy, PolicyEnv
from growenv.policies.registry import (
    POLICIES,
    PolicyEntry,
    make_policy,
    policy_entry,
    policy_specs,
)

__all__ = [
    "POLICIES",
    "Policy",
    "PolicyEntry",
    "PolicyEnv",
    "make_policy",
    "policy_entry",
    "policy_specs",
]
