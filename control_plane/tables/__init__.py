"""The leader's table computation: weights, ejection, one table per region, the diff a dry run shows, and the loop
that publishes them."""
