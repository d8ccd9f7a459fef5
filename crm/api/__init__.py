"""REST API v1 (/api/v1/): thin views over the crm services and selectors."""
