"""Energy and carbon: operational (power x time x grid intensity) and embodied carbon."""
