"""Tenants: the model, the registry port, quotas and routing (what core decides about tenancy)."""
