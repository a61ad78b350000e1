from nexus.workflow.builder import WorkflowBuilder
from nexus.enterprise.tenancy import TenantManager

# Enterprise tenant management
tenant_manager = TenantManager(
    isolation_level="strict",  # strict, moderate, basic
    resource_quotas={
        "api_requests_per_hour": 10000,
        "concurrent_workflows": 50,
        "cli_sessions": 100,
        "mcp_tools": 25,
        "storage_mb": 10000
    },
    cross_tenant_policies={
        "data_sharing": False,
        "workflow_sharing": "admin_only",
        "session_isolation": True
    }
)

nexus = create_production_nexus(
    tenant_manager=tenant_manager,
    tenant_routing={
        "api": "subdomain",     # tenant1.api.company.com
        "cli": "prefix",        # nexus --tenant=tenant1
        "mcp": "port_offset"    # tenant1: 3001, tenant2: 3002
    }
)

# Tenant creation
await nexus.create_tenant(
    tenant_id="enterprise_client_001",
    name="Enterprise Client Corp",
    config={
        "api_subdomain": "client001",
        "cli_prefix": "client001",
        "mcp_port": 3001,
        "quota_profile": "enterprise_large",
        "compliance_level": "hipaa_sox"
    }
)
