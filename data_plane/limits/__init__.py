"""Traffic shaping: token buckets, rate limits held region-wide through Redis, the admission order and the waiting
rooms."""
