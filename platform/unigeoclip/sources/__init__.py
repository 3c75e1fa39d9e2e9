"""Sources of co-located geodata: the synthetic world, real Earth data from packages, a user's files."""
