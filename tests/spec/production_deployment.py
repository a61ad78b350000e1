from nexus.workflow.builder import WorkflowBuilder
from nexus import Nexus
from nexus.enterprise.auth import EnterpriseAuthProvider
from nexus.enterprise.monitoring import PrometheusMonitoring

# Enterprise-grade multi-channel platform
app = Nexus(
    # Channel configuration
    api_port=8000,
    mcp_port=3000,

    # Enterprise features enabled
    enable_auth=True,
    enable_monitoring=True,
    rate_limit=1000  # Requests per minute
)

# Configure enterprise authentication via attributes
app.auth.provider = EnterpriseAuthProvider(
    ldap_server="ldap://enterprise.local",
    sso_endpoint="https://sso.company.com/saml",
    enable_api_keys=True,
    enable_mfa=True
)

# Configure monitoring
app.monitoring.backend = PrometheusMonitoring(
    metrics_port=9090,
    enable_traces=True,
    enable_logs=True
)

# Multi-tenancy configuration
app.auth.multi_tenant = True
app.auth.tenant_isolation = "strict"

# Compliance configuration
app.auth.compliance_mode = "enterprise"  # GDPR + HIPAA + SOX
app.auth.audit_log_retention = 2557  # 7 years

# High availability configuration
app.api.enable_clustering = True
app.api.health_check_interval = 30

# Start the platform
app.start()
