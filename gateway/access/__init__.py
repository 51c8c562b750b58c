"""Access control: identity (who), policy (may they), audit (what they did)."""
