"""`meridian bench ...`: benchmarks that print their figures (a table, or one JSON object with --json)."""
