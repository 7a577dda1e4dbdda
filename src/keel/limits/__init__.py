"""Rate limits, budgets and key scopes: admitted before routing, settled after the answer."""
