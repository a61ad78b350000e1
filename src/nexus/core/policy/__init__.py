"""Authorization policy: permissions and roles (RBAC), conditions and policies (ABAC), decisions."""
