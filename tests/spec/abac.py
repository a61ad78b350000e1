from nexus.workflow.builder import WorkflowBuilder
from nexus.enterprise.auth import ABACPolicyEngine

# Advanced policy-based access control
abac = ABACPolicyEngine()

# Time-based access policy
abac.add_policy("business_hours_only", {
    "condition": "current_time between 09:00 and 17:00",
    "channels": ["api", "cli"],
    "resources": ["sensitive_workflows", "financial_data"],
    "effect": "permit"
})

# Location-based policy
abac.add_policy("location_restricted", {
    "condition": "user.location in ['US', 'EU']",
    "channels": ["mcp"],
    "resources": ["compliance_tools"],
    "effect": "permit"
})

# Data classification policy
abac.add_policy("data_access_control", {
    "condition": "user.clearance_level >= resource.classification_level",
    "channels": ["*"],
    "resources": ["classified_workflows"],
    "effect": "permit"
})

nexus.set_abac_engine(abac)
