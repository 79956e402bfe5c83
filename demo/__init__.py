"""`meridian demo`: a multi-region stack under realistic load, a region saturated and recovered, narrated live and
reported."""
