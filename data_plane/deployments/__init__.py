"""What a router knows of each deployment: its live statistics, circuit breaker and health, the probes that feed
them, and the live state holding them with the table in force."""
