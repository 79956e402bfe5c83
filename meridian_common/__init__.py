"""Plumbing both planes share: the mergeable histogram, config loading, logging set-up."""
