"""Training the mature model: the shared loop and the seeded command."""
