from nexus.workflow.builder import WorkflowBuilder
from nexus import Nexus
from nexus.enterprise.auth import MultiFactorAuth

app = Nexus(enable_auth=True)

# MFA configuration for all channels
mfa_config = MultiFactorAuth(
    methods=["totp", "sms", "hardware_key"],
    required_for=["api", "cli", "mcp"],
    bypass_roles=["system", "automated"],
    session_binding=True  # Bind MFA to session across channels
)

# Configure auth attributes
app.auth.mfa = mfa_config
app.auth.session_duration = 28800  # 8 hours
app.auth.cross_channel_sso = True
app.auth.require_reauth_for = ["admin", "sensitive_workflows"]

# MFA flow across channels:
# 1. User authenticates via any channel (API/CLI/MCP)
# 2. MFA challenge presented in appropriate format
# 3. Session token valid across all channels
# 4. Sensitive operations require re-authentication

app.start()
