from nexus.workflow.builder import WorkflowBuilder
from nexus.enterprise.auth import RBACManager

# Define enterprise roles with channel permissions
rbac = RBACManager()

# Executive dashboard access
rbac.create_role("executive", permissions=[
    "api:read:dashboards",
    "api:read:reports",
    "cli:read:status",
    "mcp:read:resources"
])

# Developer full access
rbac.create_role("developer", permissions=[
    "api:*:workflows",
    "cli:*:*",
    "mcp:*:tools",
    "mcp:*:resources"
])

# Operations limited access
rbac.create_role("operator", permissions=[
    "api:read:health",
    "api:execute:monitoring_workflows",
    "cli:execute:status",
    "cli:execute:deploy",
    "mcp:execute:system_tools"
])

# Apply RBAC across all channels
nexus.set_rbac_manager(rbac)
