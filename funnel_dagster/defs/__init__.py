"""The code location's definitions, one module per concern."""
