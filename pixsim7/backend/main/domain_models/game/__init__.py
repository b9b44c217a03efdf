"""Game domain models: worlds and the play sessions users run in them."""
