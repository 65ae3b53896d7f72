"""How a run is configured: the config schema and its checks, the recipe (batch rule, learning-rate
schedule), the plan of steps."""
