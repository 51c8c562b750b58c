"""Evidence release: requests with four-eyes approval, the release register, signed packages."""
