from nexus.workflow.builder import WorkflowBuilder
# Workflows with tenant context
tenant_workflow = WorkflowBuilder()

tenant_workflow.add_node("TenantAssignmentNode", "assign_tenant", {
    "tenant_source": "session",  # Extract from session context
    "enforce_isolation": True,
    "audit_access": True
})

tenant_workflow.add_node("AsyncSQLDatabaseNode", "tenant_data", {
    "connection_string": "postgresql://db:5432/${tenant_id}_database",
    "query": "SELECT * FROM ${tenant_id}.customer_data WHERE id = :customer_id",
    "tenant_isolation": True
})

tenant_workflow.add_node("PythonCodeNode", "process_tenant_data", {
    "code": """
# Tenant context automatically injected
tenant_id = tenant_context['tenant_id']
tenant_config = tenant_context['config']

# Process data with tenant-specific logic
if tenant_config.get('compliance_level') == 'hipaa':
    result = apply_hipaa_processing(data)
elif tenant_config.get('compliance_level') == 'gdpr':
    result = apply_gdpr_processing(data)
else:
    result = apply_standard_processing(data)
"""
})

# Register with tenant scoping
nexus.register_workflow("tenant_data_processing", tenant_workflow.build(),
                       tenant_scoped=True)
